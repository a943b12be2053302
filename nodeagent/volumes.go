package nodeagent

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"kforge.dev/kforge/internal/atomicfile"
)

// Volume folders under a pod's folder, named as upstream names its
// plugins so tools that know the kubelet's layout find them.
const (
	volEmptyDir  = "kubernetes.io~empty-dir"
	volConfigMap = "kubernetes.io~configmap"
	volSecret    = "kubernetes.io~secret"
	volDownward  = "kubernetes.io~downward-api"
	volProjected = "kubernetes.io~projected"
)

// mountError is a volume that cannot be set up: upstream's FailedMount.
type mountError struct{ msg string }

func (e *mountError) Error() string { return e.msg }

// volumeFile is one file of a configMap, secret, downwardAPI or projected
// volume.
type volumeFile struct {
	data []byte
	mode os.FileMode
}

// setupVolumes makes every volume of the pod ready and returns each one's
// host path. Files of configMap, secret, downwardAPI and projected
// volumes are rewritten on every call, so a changed object reaches
// running containers.
func (a *Agent) setupVolumes(pod *corev1.Pod, sb *sandbox, objects objectSource) (map[string]string, error) {
	dir := a.podDir(pod.UID)
	paths := map[string]string{}
	for _, v := range pod.Spec.Volumes {
		var (
			p     string
			files map[string]volumeFile
			err   error
		)
		switch {
		case v.EmptyDir != nil:
			p = filepath.Join(dir, "volumes", volEmptyDir, v.Name)
			if err := os.MkdirAll(p, 0o777); err != nil {
				return nil, &mountError{msg: fmt.Sprintf("emptyDir %s: %v", v.Name, err)}
			}
			_ = os.Chmod(p, 0o777)
			if v.EmptyDir.Medium == corev1.StorageMediumMemory {
				if err := mountTmpfs(p, v.EmptyDir.SizeLimit.String()); err != nil {
					return nil, &mountError{msg: fmt.Sprintf("emptyDir %s: %v", v.Name, err)}
				}
			}
		case v.HostPath != nil:
			p = v.HostPath.Path
			if err := checkHostPath(v.HostPath); err != nil {
				return nil, &mountError{msg: fmt.Sprintf("hostPath %s: %v", v.Name, err)}
			}
		case v.ConfigMap != nil:
			p = filepath.Join(dir, "volumes", volConfigMap, v.Name)
			files, err = configMapFiles(pod.Namespace, v.ConfigMap, objects)
		case v.Secret != nil:
			p = filepath.Join(dir, "volumes", volSecret, v.Name)
			files, err = secretFiles(pod.Namespace, v.Secret, objects)
		case v.DownwardAPI != nil:
			p = filepath.Join(dir, "volumes", volDownward, v.Name)
			files, err = downwardFiles(pod, sb, v.DownwardAPI.Items, v.DownwardAPI.DefaultMode)
		case v.Projected != nil:
			p = filepath.Join(dir, "volumes", volProjected, v.Name)
			files, err = a.projectedFiles(pod, sb, v.Projected, objects)
		default:
			return nil, &mountError{msg: fmt.Sprintf("volume %s: this agent does not support its type", v.Name)}
		}
		if err != nil {
			var ce *configError
			if errors.As(err, &ce) {
				return nil, &mountError{msg: fmt.Sprintf("MountVolume.SetUp failed for volume %q: %v", v.Name, err)}
			}
			return nil, fmt.Errorf("volume %s: %w", v.Name, err)
		}
		if files != nil {
			if err := writeVolumeFiles(p, files); err != nil {
				return nil, fmt.Errorf("volume %s: %w", v.Name, err)
			}
		}
		paths[v.Name] = p
	}
	return paths, nil
}

func fileMode(item *int32, def *int32, fallback os.FileMode) os.FileMode {
	switch {
	case item != nil:
		return os.FileMode(*item)
	case def != nil:
		return os.FileMode(*def)
	}
	return fallback
}

// keyFiles maps keys to files: all keys when items is empty, else only
// the listed ones at their paths (a listed key that is missing is an
// error unless the source is optional).
func keyFiles(data map[string][]byte, items []corev1.KeyToPath, def *int32, opt bool, what string) (map[string]volumeFile, error) {
	out := map[string]volumeFile{}
	if len(items) == 0 {
		for k, v := range data {
			out[k] = volumeFile{data: v, mode: fileMode(nil, def, 0o644)}
		}
		return out, nil
	}
	for _, it := range items {
		v, ok := data[it.Key]
		if !ok {
			if opt {
				continue
			}
			return nil, &configError{msg: fmt.Sprintf("configuration error: %s has no key %q", what, it.Key)}
		}
		out[it.Path] = volumeFile{data: v, mode: fileMode(it.Mode, def, 0o644)}
	}
	return out, nil
}

func configMapFiles(ns string, src *corev1.ConfigMapVolumeSource, objects objectSource) (map[string]volumeFile, error) {
	cm, err := objects.ConfigMap(ns, src.Name)
	if err != nil {
		if apierrors.IsNotFound(err) && optional(src.Optional) {
			return map[string]volumeFile{}, nil
		}
		return nil, lookupError("configmap", src.Name, err)
	}
	data := map[string][]byte{}
	for k, v := range cm.Data {
		data[k] = []byte(v)
	}
	for k, v := range cm.BinaryData {
		data[k] = v
	}
	return keyFiles(data, src.Items, src.DefaultMode, optional(src.Optional), "configmap "+src.Name)
}

func secretFiles(ns string, src *corev1.SecretVolumeSource, objects objectSource) (map[string]volumeFile, error) {
	s, err := objects.Secret(ns, src.SecretName)
	if err != nil {
		if apierrors.IsNotFound(err) && optional(src.Optional) {
			return map[string]volumeFile{}, nil
		}
		return nil, lookupError("secret", src.SecretName, err)
	}
	return keyFiles(s.Data, src.Items, src.DefaultMode, optional(src.Optional), "secret "+src.SecretName)
}

func downwardFiles(pod *corev1.Pod, sb *sandbox, items []corev1.DownwardAPIVolumeFile, def *int32) (map[string]volumeFile, error) {
	out := map[string]volumeFile{}
	for _, it := range items {
		var v string
		switch {
		case it.FieldRef != nil:
			switch it.FieldRef.FieldPath {
			case "metadata.labels":
				v = formatMap(pod.Labels)
			case "metadata.annotations":
				v = formatMap(pod.Annotations)
			default:
				var err error
				if v, err = podFieldValue(pod, it.FieldRef.FieldPath, sb.IP, ""); err != nil {
					return nil, err
				}
			}
		case it.ResourceFieldRef != nil:
			c := &corev1.Container{}
			if len(pod.Spec.Containers) > 0 {
				c = &pod.Spec.Containers[0]
			}
			var err error
			if v, err = resourceFieldValue(envInput{pod: pod, container: c}, it.ResourceFieldRef); err != nil {
				return nil, err
			}
		}
		out[it.Path] = volumeFile{data: []byte(v), mode: fileMode(it.Mode, def, 0o644)}
	}
	return out, nil
}

// formatMap is the downward API's key="value" lines, sorted.
func formatMap(m map[string]string) string {
	keys := sortedKeys(m)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte('\n')
		}
		fmt.Fprintf(&b, "%s=%q", k, m[k])
	}
	return b.String()
}

// projectedFiles merges the sources of a projected volume. A service
// account token needs the TokenRequest API; until the apiserver serves
// it such a volume fails to mount with that reason.
func (a *Agent) projectedFiles(pod *corev1.Pod, sb *sandbox, src *corev1.ProjectedVolumeSource, objects objectSource) (map[string]volumeFile, error) {
	out := map[string]volumeFile{}
	merge := func(files map[string]volumeFile) {
		for k, v := range files {
			out[k] = v
		}
	}
	for _, s := range src.Sources {
		switch {
		case s.ConfigMap != nil:
			files, err := configMapFiles(pod.Namespace, &corev1.ConfigMapVolumeSource{LocalObjectReference: s.ConfigMap.LocalObjectReference,
				Items: s.ConfigMap.Items, Optional: s.ConfigMap.Optional, DefaultMode: src.DefaultMode}, objects)
			if err != nil {
				return nil, err
			}
			merge(files)
		case s.Secret != nil:
			files, err := secretFiles(pod.Namespace, &corev1.SecretVolumeSource{SecretName: s.Secret.Name,
				Items: s.Secret.Items, Optional: s.Secret.Optional, DefaultMode: src.DefaultMode}, objects)
			if err != nil {
				return nil, err
			}
			merge(files)
		case s.DownwardAPI != nil:
			files, err := downwardFiles(pod, sb, s.DownwardAPI.Items, src.DefaultMode)
			if err != nil {
				return nil, err
			}
			merge(files)
		case s.ServiceAccountToken != nil:
			tok, err := a.serviceAccountToken(pod, s.ServiceAccountToken)
			if err != nil {
				return nil, &configError{msg: fmt.Sprintf("service account token: %v", err)}
			}
			out[s.ServiceAccountToken.Path] = volumeFile{data: []byte(tok), mode: fileMode(nil, src.DefaultMode, 0o644)}
		default:
			return nil, &configError{msg: "unsupported projected volume source"}
		}
	}
	return out, nil
}

// writeVolumeFiles makes dir hold exactly files: changed files are
// replaced by rename (a reader sees old or new content), files no longer
// listed are removed.
func writeVolumeFiles(dir string, files map[string]volumeFile) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	want := map[string]bool{}
	for rel, f := range files {
		clean := filepath.Clean(rel)
		if filepath.IsAbs(clean) || clean == ".." || strings.HasPrefix(clean, "../") {
			return fmt.Errorf("file path %q leaves the volume", rel)
		}
		want[clean] = true
		p := filepath.Join(dir, clean)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if old, err := os.ReadFile(p); err == nil && bytes.Equal(old, f.data) {
			if fi, err := os.Stat(p); err == nil && fi.Mode().Perm() == f.mode.Perm() {
				continue
			}
		}
		if err := atomicfile.Write(p, f.data, f.mode.Perm()); err != nil {
			return err
		}
	}
	return filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if !want[rel] {
			return os.Remove(p)
		}
		return nil
	})
}

// checkHostPath checks (or makes) a hostPath volume as its type asks.
func checkHostPath(hp *corev1.HostPathVolumeSource) error {
	t := corev1.HostPathUnset
	if hp.Type != nil {
		t = *hp.Type
	}
	fi, err := os.Stat(hp.Path)
	switch t {
	case corev1.HostPathUnset:
		return nil
	case corev1.HostPathDirectoryOrCreate:
		if err != nil {
			return os.MkdirAll(hp.Path, 0o755)
		}
		if !fi.IsDir() {
			return fmt.Errorf("%s is not a directory", hp.Path)
		}
		return nil
	case corev1.HostPathFileOrCreate:
		if err != nil {
			if err := os.MkdirAll(filepath.Dir(hp.Path), 0o755); err != nil {
				return err
			}
			f, err := os.OpenFile(hp.Path, os.O_CREATE|os.O_RDONLY, 0o644)
			if err != nil {
				return err
			}
			return f.Close()
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s: %w", hp.Path, err)
	}
	switch t {
	case corev1.HostPathDirectory:
		if !fi.IsDir() {
			return fmt.Errorf("%s is not a directory", hp.Path)
		}
	case corev1.HostPathFile:
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("%s is not a file", hp.Path)
		}
	case corev1.HostPathSocket:
		if fi.Mode()&os.ModeSocket == 0 {
			return fmt.Errorf("%s is not a socket", hp.Path)
		}
	case corev1.HostPathCharDev:
		if fi.Mode()&os.ModeCharDevice == 0 {
			return fmt.Errorf("%s is not a character device", hp.Path)
		}
	case corev1.HostPathBlockDev:
		if fi.Mode()&os.ModeDevice == 0 || fi.Mode()&os.ModeCharDevice != 0 {
			return fmt.Errorf("%s is not a block device", hp.Path)
		}
	}
	return nil
}

// mountTmpfs mounts a tmpfs at p unless one is there already.
func mountTmpfs(p, size string) error {
	mounted, err := mountPointsUnder(p)
	if err != nil {
		return err
	}
	for _, m := range mounted {
		if m == p {
			return nil
		}
	}
	opts := "mode=0777"
	if size != "" && size != "0" {
		opts += ",size=" + size
	}
	return unix.Mount("tmpfs", p, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, opts)
}

// unmountVolumes unmounts everything mounted under dir, deepest first.
func unmountVolumes(dir string) error {
	mounted, err := mountPointsUnder(dir)
	if err != nil {
		return err
	}
	sort.Sort(sort.Reverse(sort.StringSlice(mounted)))
	for _, m := range mounted {
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("unmounting %s: %w", m, err)
		}
	}
	return nil
}

// mountPointsUnder lists the mount points at or below dir.
func mountPointsUnder(dir string) ([]string, error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 5 {
			continue
		}
		mp := unescapeMountPath(f[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	return out, nil
}

// unescapeMountPath undoes mountinfo's octal escapes (\040 for a space).
func unescapeMountPath(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v int
			if _, err := fmt.Sscanf(s[i+1:i+4], "%o", &v); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
