package atomicfile

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// leftovers lists the files in dir other than the expected ones.
func leftovers(t *testing.T, dir string, want ...string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var extra []string
	for _, e := range entries {
		keep := false
		for _, w := range want {
			keep = keep || e.Name() == w
		}
		if !keep {
			extra = append(extra, e.Name())
		}
	}
	return extra
}

func TestWriteCreatesAndReplaces(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ca.key")
	for _, tc := range []struct {
		data string
		perm fs.FileMode
	}{
		{"first", 0o600},
		{"second, longer than the first", 0o644},
		{"3", 0o600},
	} {
		if err := Write(path, []byte(tc.data), tc.perm); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(path)
		if err != nil || string(got) != tc.data {
			t.Fatalf("content %q %v, want %q", got, err, tc.data)
		}
		fi, err := os.Stat(path)
		if err != nil || fi.Mode().Perm() != tc.perm {
			t.Fatalf("mode %v %v, want %v", fi.Mode(), err, tc.perm)
		}
	}
	if extra := leftovers(t, dir, "ca.key"); len(extra) > 0 {
		t.Errorf("temporary files left: %v", extra)
	}
}

func TestWriteIgnoresUmask(t *testing.T) {
	path := filepath.Join(t.TempDir(), "unit")
	// 0o777 would be cut to 0o755 (or less) by any usual umask.
	if err := Write(path, []byte("x"), 0o777); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o777 {
		t.Fatalf("mode %v %v, want 0777", fi.Mode(), err)
	}
}

func TestWriteFailureLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	// A folder in the way makes the rename fail after the temp file was written.
	target := filepath.Join(dir, "taken")
	if err := os.Mkdir(target, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(target, "inside"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	err := Write(target, []byte("x"), 0o600)
	if err == nil {
		t.Fatal("writing over a non-empty folder succeeded")
	}
	if !bytes.Contains([]byte(err.Error()), []byte(target)) {
		t.Errorf("error does not name the target: %v", err)
	}
	if extra := leftovers(t, dir, "taken"); len(extra) > 0 {
		t.Errorf("temporary files left after a failure: %v", extra)
	}

	err = Write(filepath.Join(dir, "missing", "f"), []byte("x"), 0o600)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing folder: %v, want ErrNotExist", err)
	}
}

func TestWriteReplacesSymlink(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	if err := os.WriteFile(victim, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(victim, link); err != nil {
		t.Fatal(err)
	}
	if err := Write(link, []byte("new"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(victim); string(got) != "keep" {
		t.Errorf("the link's target was written: %q", got)
	}
	if fi, err := os.Lstat(link); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("the link is not a regular file now: %v %v", fi.Mode(), err)
	}
}

func TestReadersSeeWholeFiles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	a, b := bytes.Repeat([]byte("a"), 1<<16), bytes.Repeat([]byte("b"), 1<<15)
	if err := Write(path, a, 0o600); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var torn []int
	var mu sync.Mutex
	for range 2 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				got, err := os.ReadFile(path)
				if err != nil || !(bytes.Equal(got, a) || bytes.Equal(got, b)) {
					mu.Lock()
					torn = append(torn, len(got))
					mu.Unlock()
				}
			}
		})
	}
	for i := range 200 {
		data := a
		if i%2 == 0 {
			data = b
		}
		if err := Write(path, data, 0o600); err != nil {
			t.Error(err)
			break
		}
	}
	close(stop)
	wg.Wait()
	if len(torn) > 0 {
		t.Errorf("%d reads saw a partial file (sizes %v)", len(torn), torn[:min(len(torn), 5)])
	}
}
