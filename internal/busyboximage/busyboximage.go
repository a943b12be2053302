package busyboximage

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"kforge.dev/kforge/internal/atomicfile"
)

// Ref is the name the workload image is imported under.
const Ref = "docker.io/library/busybox:local"

// busyboxApplets get a symlink to /bin/busybox in the image.
var busyboxApplets = []string{
	"sh", "ash", "cat", "chmod", "cp", "date", "dd", "df", "echo", "env", "false", "grep",
	"head", "hostname", "httpd", "id", "ip", "kill", "ln", "ls", "mkdir", "mv", "nc",
	"nslookup", "ping", "printf", "ps", "pwd", "rm", "sed", "seq", "sleep", "sort", "tail",
	"tee", "test", "top", "touch", "true", "uname", "vi", "watch", "wc", "wget", "awk", "find",
}

// OCI media types and annotations used by the archive.
const (
	mediaTypeIndex    = "application/vnd.oci.image.index.v1+json"
	mediaTypeManifest = "application/vnd.oci.image.manifest.v1+json"
	mediaTypeConfig   = "application/vnd.oci.image.config.v1+json"
	mediaTypeLayer    = "application/vnd.oci.image.layer.v1.tar"
	annotRefName      = "org.opencontainers.image.ref.name"
	annotImageName    = "io.containerd.image.name"
)

type ociDescriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Platform    *ociPlatform      `json:"platform,omitempty"`
}

type ociPlatform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
}

type ociManifest struct {
	SchemaVersion int             `json:"schemaVersion"`
	MediaType     string          `json:"mediaType"`
	Config        ociDescriptor   `json:"config"`
	Layers        []ociDescriptor `json:"layers"`
}

type ociIndex struct {
	SchemaVersion int             `json:"schemaVersion"`
	MediaType     string          `json:"mediaType"`
	Manifests     []ociDescriptor `json:"manifests"`
}

type ociConfig struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
	Config       struct {
		Env        []string `json:"Env"`
		Cmd        []string `json:"Cmd"`
		WorkingDir string   `json:"WorkingDir"`
	} `json:"config"`
	RootFS struct {
		Type    string   `json:"type"`
		DiffIDs []string `json:"diff_ids"`
	} `json:"rootfs"`
}

// busyboxLayer is a single uncompressed layer: /bin/busybox, a symlink per
// applet, and the few folders and files programs expect. Times are fixed,
// so the same binary always gives the same digest.
func busyboxLayer(busybox []byte) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mtime := time.Unix(0, 0)
	dir := func(name string, mode int64) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode, ModTime: mtime, Format: tar.FormatPAX})
	}
	file := func(name string, mode int64, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data)), ModTime: mtime, Format: tar.FormatPAX}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	for _, d := range []struct {
		name string
		mode int64
	}{{"bin", 0o755}, {"etc", 0o755}, {"tmp", 0o1777}, {"var", 0o755}, {"var/www", 0o755}, {"root", 0o700}, {"proc", 0o555}, {"sys", 0o555}, {"dev", 0o755}} {
		if err := dir(d.name, d.mode); err != nil {
			return nil, err
		}
	}
	if err := file("bin/busybox", 0o755, busybox); err != nil {
		return nil, err
	}
	for _, a := range busyboxApplets {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + a, Linkname: "busybox", Mode: 0o777, ModTime: mtime, Format: tar.FormatPAX}); err != nil {
			return nil, err
		}
	}
	for _, f := range []struct{ name, data string }{
		{"etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"},
		{"etc/group", "root:x:0:\nnogroup:x:65534:\n"},
		{"var/www/index.html", "hello from busybox httpd\n"},
	} {
		if err := file(f.name, 0o644, []byte(f.data)); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func digestOf(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// ociArch maps GOARCH to the OCI architecture name (they agree for the
// platforms Debian and Go share).
func ociArch() string { return runtime.GOARCH }

// Write writes an OCI image layout archive (oci-layout,
// index.json, blobs/sha256/…) holding one image named ref whose single
// layer is built from the busybox binary.
func Write(w io.Writer, busybox []byte, ref string) error {
	layer, err := busyboxLayer(busybox)
	if err != nil {
		return err
	}
	var cfg ociConfig
	cfg.Architecture = ociArch()
	cfg.OS = "linux"
	cfg.Config.Env = []string{"PATH=/bin"}
	cfg.Config.Cmd = []string{"sh"}
	cfg.Config.WorkingDir = "/"
	cfg.RootFS.Type = "layers"
	cfg.RootFS.DiffIDs = []string{digestOf(layer)}
	cfgJSON, err := json.Marshal(cfg)
	if err != nil {
		return err
	}
	man := ociManifest{
		SchemaVersion: 2,
		MediaType:     mediaTypeManifest,
		Config:        ociDescriptor{MediaType: mediaTypeConfig, Digest: digestOf(cfgJSON), Size: int64(len(cfgJSON))},
		Layers:        []ociDescriptor{{MediaType: mediaTypeLayer, Digest: digestOf(layer), Size: int64(len(layer))}},
	}
	manJSON, err := json.Marshal(man)
	if err != nil {
		return err
	}
	tag := ref
	if i := lastColonAfterSlash(ref); i >= 0 {
		tag = ref[i+1:]
	}
	idx := ociIndex{
		SchemaVersion: 2,
		MediaType:     mediaTypeIndex,
		Manifests: []ociDescriptor{{
			MediaType:   mediaTypeManifest,
			Digest:      digestOf(manJSON),
			Size:        int64(len(manJSON)),
			Annotations: map[string]string{annotImageName: ref, annotRefName: tag},
			Platform:    &ociPlatform{Architecture: cfg.Architecture, OS: cfg.OS},
		}},
	}
	idxJSON, err := json.Marshal(idx)
	if err != nil {
		return err
	}

	tw := tar.NewWriter(w)
	mtime := time.Unix(0, 0)
	for _, d := range []string{"blobs/", "blobs/sha256/"} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o755, ModTime: mtime}); err != nil {
			return err
		}
	}
	put := func(name string, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: mtime}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	blob := func(data []byte) string { return "blobs/sha256/" + digestOf(data)[len("sha256:"):] }
	for _, f := range []struct {
		name string
		data []byte
	}{
		{"oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)},
		{"index.json", idxJSON},
		{blob(manJSON), manJSON},
		{blob(cfgJSON), cfgJSON},
		{blob(layer), layer},
	} {
		if err := put(f.name, f.data); err != nil {
			return err
		}
	}
	return tw.Close()
}

func lastColonAfterSlash(ref string) int {
	for i := len(ref) - 1; i >= 0; i-- {
		switch ref[i] {
		case ':':
			return i
		case '/':
			return -1
		}
	}
	return -1
}

// WriteArchive builds DIR/images/busybox.tar from the base image's
// busybox-static binary.
func WriteArchive(dir, rootfs string) (string, error) {
	bb, err := os.ReadFile(filepath.Join(rootfs, "bin", "busybox"))
	if err != nil {
		return "", fmt.Errorf("busybox-static in the base image: %w", err)
	}
	var buf bytes.Buffer
	if err := Write(&buf, bb, Ref); err != nil {
		return "", fmt.Errorf("building the busybox image: %w", err)
	}
	imgDir := filepath.Join(dir, "images")
	if err := os.MkdirAll(imgDir, 0o755); err != nil {
		return "", err
	}
	p := filepath.Join(imgDir, "busybox.tar")
	return p, atomicfile.Write(p, buf.Bytes(), 0o644)
}
