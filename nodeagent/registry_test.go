package nodeagent

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/registry"
)

// startRegistry serves an in-memory OCI registry (go-containerregistry's) on 127.0.0.1 that asks
// for user:pass (HTTP basic), and pushes the image of the OCI archive to
// it as repoTag. It returns the registry's host:port.
func startRegistry(t *testing.T, archive []byte, repoTag, user, pass string) string {
	t.Helper()
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != user || p != pass {
			w.Header().Set("WWW-Authenticate", `Basic realm="kforge-test"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")

	// The archive is an OCI layout in a tar: unpack it and push its image.
	dir := t.TempDir()
	tr := tar.NewReader(bytes.NewReader(archive))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		p := filepath.Join(dir, filepath.FromSlash(h.Name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Push it as a client does: each blob by a monolithic upload, then
	// the manifest under the tag.
	blob := func(digest string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, "blobs", strings.Replace(digest, ":", "/", 1)))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	type desc struct {
		MediaType string `json:"mediaType"`
		Digest    string `json:"digest"`
	}
	var index struct{ Manifests []desc }
	if err := json.Unmarshal([]byte(readFile(t, filepath.Join(dir, "index.json"))), &index); err != nil || len(index.Manifests) == 0 {
		t.Fatalf("archive index: %v %+v", err, index)
	}
	manifest := blob(index.Manifests[0].Digest)
	var m struct {
		Config desc
		Layers []desc
	}
	if err := json.Unmarshal(manifest, &m); err != nil {
		t.Fatal(err)
	}
	repo, tag, _ := strings.Cut(repoTag, ":")
	do := func(method, url, contentType string, body []byte, want int) *http.Response {
		req, err := http.NewRequest(method, url, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.SetBasicAuth(user, pass)
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("%s %s: %s", method, url, resp.Status)
		}
		return resp
	}
	for _, d := range append([]desc{m.Config}, m.Layers...) {
		resp := do(http.MethodPost, srv.URL+"/v2/"+repo+"/blobs/uploads/", "", nil, http.StatusAccepted)
		loc, err := resp.Location()
		if err != nil {
			t.Fatal(err)
		}
		q := loc.Query()
		q.Set("digest", d.Digest)
		loc.RawQuery = q.Encode()
		do(http.MethodPut, loc.String(), "application/octet-stream", blob(d.Digest), http.StatusCreated)
	}
	do(http.MethodPut, srv.URL+"/v2/"+repo+"/manifests/"+tag, index.Manifests[0].MediaType, manifest, http.StatusCreated)
	return host
}
