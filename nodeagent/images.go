package nodeagent

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/core/remotes/docker/config"
	"github.com/containerd/errdefs"
	"github.com/distribution/reference"
	corev1 "k8s.io/api/core/v1"
)

// Images: a pod's image comes from containerd's store, from an OCI archive
// in the image folder (the air-gapped path), or from its registry, as the
// container's imagePullPolicy says (upstream's: Always pulls every time,
// IfNotPresent only when neither containerd nor an archive has it, Never
// never). Pulls go through containerd's client with its own registry host
// configuration (hosts.toml under registryConfigDir: mirrors, plain HTTP,
// CAs) and the credentials of the pod's imagePullSecrets.

// errImageMissing is an image neither containerd nor the archives have
// when the policy forbids a pull.
var errImageMissing = errors.New("image not found")

// normalizeImage turns "busybox" into "docker.io/library/busybox:latest",
// the name containerd stores images under.
func normalizeImage(ref string) (string, error) {
	n, err := reference.ParseDockerRef(ref)
	if err != nil {
		return "", err
	}
	return n.String(), nil
}

// pullPolicy is the container's policy, defaulted as the apiserver does
// when it is empty: Always for :latest or no tag, else IfNotPresent.
func pullPolicy(c *corev1.Container) corev1.PullPolicy {
	if c.ImagePullPolicy != "" {
		return c.ImagePullPolicy
	}
	if n, err := reference.ParseDockerRef(c.Image); err == nil {
		if t, ok := n.(reference.Tagged); ok && t.Tag() != "latest" {
			return corev1.PullIfNotPresent
		}
		if _, ok := n.(reference.Digested); ok {
			return corev1.PullIfNotPresent
		}
	}
	return corev1.PullAlways
}

// credentials answers a registry host with the first matching entry of
// the pod's pull secrets (kubernetes.io/dockerconfigjson or dockercfg).
type credentials func(host string) (string, string, error)

// ensureImage returns the image ref, unpacked, by policy; pulled says
// whether it came from a registry this time. onPull, if set, is called
// just before a pull. creds is called only for a pull (reading the pull
// secrets costs API requests), once per shared pull. Concurrent pulls of
// one image share a pull only when they share credsKey (the pull secrets
// they come with).
func (r *runtime) ensureImage(ctx context.Context, ref string, policy corev1.PullPolicy, creds func() credentials, credsKey string, onPull func()) (img client.Image, pulled bool, err error) {
	name, err := normalizeImage(ref)
	if err != nil {
		return nil, false, fmt.Errorf("image %q: %w", ref, err)
	}
	if policy != corev1.PullAlways {
		img, err = r.c.GetImage(ctx, name)
		if errdefs.IsNotFound(err) {
			if ierr := r.importArchives(ctx); ierr != nil {
				r.log.Warn("importing image archives", "dir", r.imageDir, "err", ierr)
			}
			img, err = r.c.GetImage(ctx, name)
		}
		if errdefs.IsNotFound(err) && policy == corev1.PullNever {
			return nil, false, fmt.Errorf("%w: %s is not in containerd nor in an archive in %s", errImageMissing, name, r.imageDir)
		}
		if err != nil && !errdefs.IsNotFound(err) {
			return nil, false, fmt.Errorf("image %s: %w", name, err)
		}
	}
	if img == nil {
		if onPull != nil {
			onPull()
		}
		v, perr, _ := r.pulls.Do(name+"\x00"+credsKey, func() (any, error) {
			var c credentials
			if creds != nil {
				c = creds()
			}
			return r.pull(ctx, name, c)
		})
		if perr != nil {
			return nil, false, perr
		}
		img, pulled = v.(client.Image), true
	}
	ok, err := img.IsUnpacked(ctx, r.snapshotter)
	if err != nil {
		return nil, pulled, fmt.Errorf("image %s: %w", name, err)
	}
	if !ok {
		if err := img.Unpack(ctx, r.snapshotter); err != nil {
			return nil, pulled, fmt.Errorf("image %s: unpacking: %w", name, err)
		}
	}
	return img, pulled, nil
}

// pull fetches name from its registry and unpacks it.
func (r *runtime) pull(ctx context.Context, name string, creds credentials) (client.Image, error) {
	opts := config.HostOptions{HostDir: config.HostDirFromRoot(r.registryDir)}
	if creds != nil {
		opts.Credentials = creds
	}
	resolver := docker.NewResolver(docker.ResolverOptions{Hosts: config.ConfigureHosts(ctx, opts)})
	img, err := r.c.Pull(ctx, name, client.WithResolver(resolver), client.WithPullUnpack, client.WithPullSnapshotter(r.snapshotter))
	if err != nil {
		return nil, fmt.Errorf("pulling %s: %w", name, err)
	}
	return img, nil
}

// pullSecretsKey names the pull secrets a pod comes with.
func pullSecretsKey(pod *corev1.Pod) string {
	k := pod.Namespace
	for _, s := range pod.Spec.ImagePullSecrets {
		k += "/" + s.Name
	}
	return k
}

// pullSecretCredentials reads the pod's imagePullSecrets into a lookup by
// registry host; secrets that are missing or malformed are skipped.
func pullSecretCredentials(pod *corev1.Pod, get func(ns, name string) (*corev1.Secret, error)) credentials {
	type entry struct {
		Auth     string `json:"auth"`
		Username string `json:"username"`
		Password string `json:"password"`
	}
	found := map[string]entry{}
	for _, ref := range pod.Spec.ImagePullSecrets {
		sec, err := get(pod.Namespace, ref.Name)
		if err != nil {
			continue
		}
		var auths map[string]entry
		switch sec.Type {
		case corev1.SecretTypeDockerConfigJson:
			var cfg struct {
				Auths map[string]entry `json:"auths"`
			}
			if json.Unmarshal(sec.Data[corev1.DockerConfigJsonKey], &cfg) != nil {
				continue
			}
			auths = cfg.Auths
		case corev1.SecretTypeDockercfg:
			if json.Unmarshal(sec.Data[corev1.DockerConfigKey], &auths) != nil {
				continue
			}
		}
		for server, e := range auths {
			host := registryHost(server)
			if _, dup := found[host]; !dup { // the first secret naming a host wins
				found[host] = e
			}
		}
	}
	if len(found) == 0 {
		return nil
	}
	return func(host string) (string, string, error) {
		e, ok := found[host]
		if !ok && host == "registry-1.docker.io" {
			e, ok = found["docker.io"]
		}
		if !ok {
			return "", "", nil
		}
		if e.Username != "" || e.Password != "" {
			return e.Username, e.Password, nil
		}
		raw, err := base64.StdEncoding.DecodeString(e.Auth)
		if err != nil {
			return "", "", fmt.Errorf("pull secret for %s: auth is not base64", host)
		}
		user, pass, _ := strings.Cut(string(raw), ":")
		return user, pass, nil
	}
}

// registryHost is the host[:port] of a docker config key, which may be a
// URL ("https://index.docker.io/v1/") or a bare host.
func registryHost(server string) string {
	s := strings.TrimPrefix(strings.TrimPrefix(server, "https://"), "http://")
	s, _, _ = strings.Cut(s, "/")
	switch s {
	case "index.docker.io", "registry-1.docker.io":
		return "docker.io"
	}
	return s
}
