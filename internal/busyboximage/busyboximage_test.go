package busyboximage

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"strings"
	"testing"
)

func readTar(t *testing.T, data []byte) (map[string][]byte, map[string]*tar.Header) {
	t.Helper()
	files := map[string][]byte{}
	hdrs := map[string]*tar.Header{}
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		files[h.Name] = b
		hdrs[h.Name] = h
	}
	return files, hdrs
}

func TestBusyboxImageLayout(t *testing.T) {
	bin := []byte("\x7fELF not really busybox")
	var buf bytes.Buffer
	if err := Write(&buf, bin, Ref); err != nil {
		t.Fatal(err)
	}
	files, _ := readTar(t, buf.Bytes())
	if got := string(files["oci-layout"]); got != `{"imageLayoutVersion":"1.0.0"}` {
		t.Fatalf("oci-layout = %q", got)
	}
	blob := func(d string) []byte {
		t.Helper()
		hexd, ok := strings.CutPrefix(d, "sha256:")
		if !ok {
			t.Fatalf("digest %q", d)
		}
		b, ok := files["blobs/sha256/"+hexd]
		if !ok {
			t.Fatalf("blob %s missing", d)
		}
		sum := sha256.Sum256(b)
		if hex.EncodeToString(sum[:]) != hexd {
			t.Fatalf("blob %s has the wrong content", d)
		}
		return b
	}
	var idx ociIndex
	if err := json.Unmarshal(files["index.json"], &idx); err != nil {
		t.Fatal(err)
	}
	if idx.SchemaVersion != 2 || len(idx.Manifests) != 1 {
		t.Fatalf("index = %+v", idx)
	}
	md := idx.Manifests[0]
	if md.MediaType != mediaTypeManifest || md.Annotations[annotImageName] != Ref || md.Annotations[annotRefName] != "local" {
		t.Fatalf("manifest descriptor = %+v", md)
	}
	mb := blob(md.Digest)
	if int64(len(mb)) != md.Size {
		t.Fatal("manifest size mismatch")
	}
	var man ociManifest
	if err := json.Unmarshal(mb, &man); err != nil {
		t.Fatal(err)
	}
	var cfg ociConfig
	if err := json.Unmarshal(blob(man.Config.Digest), &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.OS != "linux" || cfg.Architecture == "" || len(cfg.Config.Cmd) == 0 {
		t.Errorf("config = %+v", cfg)
	}
	if len(man.Layers) != 1 || man.Layers[0].MediaType != mediaTypeLayer {
		t.Fatalf("layers = %+v", man.Layers)
	}
	layer := blob(man.Layers[0].Digest)
	if int64(len(layer)) != man.Layers[0].Size {
		t.Fatal("layer size mismatch")
	}
	if cfg.RootFS.Type != "layers" || len(cfg.RootFS.DiffIDs) != 1 || cfg.RootFS.DiffIDs[0] != man.Layers[0].Digest {
		t.Errorf("rootfs = %+v (uncompressed layer: diff_id is its digest)", cfg.RootFS)
	}
	lf, lh := readTar(t, layer)
	if !bytes.Equal(lf["bin/busybox"], bin) || lh["bin/busybox"].Mode&0o111 == 0 {
		t.Error("bin/busybox missing, wrong or not executable")
	}
	for _, a := range []string{"sh", "httpd", "echo", "sleep"} {
		h := lh["bin/"+a]
		if h == nil || h.Typeflag != tar.TypeSymlink || h.Linkname != "busybox" {
			t.Errorf("bin/%s is not a symlink to busybox: %+v", a, h)
		}
	}

	// The same binary gives the same archive (fixed times), so re-running
	// lab up does not churn image digests.
	var again bytes.Buffer
	if err := Write(&again, bin, Ref); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), again.Bytes()) {
		t.Error("archive is not reproducible")
	}
}
