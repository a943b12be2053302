package encryption

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"kforge.dev/kforge/controlplane/apiserver/internal/etcdtest"
	"kforge.dev/kforge/controlplane/apiserver/storage"
)

func key(name string, n int, fill byte) Key {
	return Key{Name: name, Secret: base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{fill}, n))}
}

func gcm(keys ...Key) Provider { return Provider{AESGCM: &KeyList{Keys: keys}} }
func box(keys ...Key) Provider { return Provider{Secretbox: &KeyList{Keys: keys}} }
func identity() Provider       { return Provider{Identity: &struct{}{}} }
func mustT(t *testing.T, ps ...Provider) *Transformer {
	t.Helper()
	tr, err := NewTransformer(ps)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

const etcdKey = "/registry/core/secrets/default/s"

func TestTransformerRoundTripAndRotation(t *testing.T) {
	plain := []byte(`{"data":{"password":"c3VwZXJzZWNyZXQ="}}`)
	for _, tc := range []struct {
		name   string
		writer []Provider
		prefix string
	}{
		{"aesgcm 16-byte key", []Provider{gcm(key("k1", 16, 1)), identity()}, "k8s:enc:aesgcm:v1:k1:"},
		{"aesgcm 32-byte key", []Provider{gcm(key("k1", 32, 1))}, "k8s:enc:aesgcm:v1:k1:"},
		{"secretbox", []Provider{box(key("b1", 32, 2)), identity()}, "k8s:enc:secretbox:v1:b1:"},
		{"identity first", []Provider{identity(), box(key("b1", 32, 2))}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := mustT(t, tc.writer...)
			stored, err := tr.TransformToStorage(etcdKey, plain)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(stored, []byte(tc.prefix)) {
				t.Fatalf("stored %q, want prefix %q", stored, tc.prefix)
			}
			if tc.prefix != "" && bytes.Contains(stored, []byte("password")) {
				t.Fatalf("stored value holds the plaintext: %q", stored)
			}
			got, stale, err := tr.TransformFromStorage(etcdKey, stored)
			if err != nil || stale || !bytes.Equal(got, plain) {
				t.Fatalf("read back %q stale=%v err=%v", got, stale, err)
			}
		})
	}

	// Rotation: a new key goes first; values under the old one still
	// read, as stale; plaintext reads while identity is listed.
	old := mustT(t, gcm(key("k1", 32, 1)))
	v1, _ := old.TransformToStorage(etcdKey, plain)
	rotated := mustT(t, gcm(key("k2", 32, 3), key("k1", 32, 1)), identity())
	if got, stale, err := rotated.TransformFromStorage(etcdKey, v1); err != nil || !stale || !bytes.Equal(got, plain) {
		t.Fatalf("old key after rotation: %q stale=%v err=%v", got, stale, err)
	}
	if got, stale, err := rotated.TransformFromStorage(etcdKey, plain); err != nil || !stale || !bytes.Equal(got, plain) {
		t.Fatalf("plaintext with identity last: %q stale=%v err=%v", got, stale, err)
	}
	v2, _ := rotated.TransformToStorage(etcdKey, plain)
	if !bytes.HasPrefix(v2, []byte("k8s:enc:aesgcm:v1:k2:")) {
		t.Fatalf("after rotation the new key should write: %q", v2)
	}

	for _, tc := range []struct {
		name string
		tr   *Transformer
		data []byte
		key  string
	}{
		{"plaintext without identity", old, plain, etcdKey},
		{"retired key", mustT(t, gcm(key("k2", 32, 3))), v1, etcdKey},
		{"same name, other key", mustT(t, gcm(key("k1", 32, 9))), v1, etcdKey},
		{"copied under another etcd key", old, v1, "/registry/core/secrets/default/other"},
		{"tampered", old, append(append([]byte{}, v1[:len(v1)-1]...), v1[len(v1)-1]^1), etcdKey},
		{"truncated", old, v1[:len("k8s:enc:aesgcm:v1:k1:")+3], etcdKey},
		{"encrypted, identity only", mustT(t, identity()), v1, etcdKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got, _, err := tc.tr.TransformFromStorage(tc.key, tc.data); err == nil {
				t.Fatalf("read %q, want an error", got)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		entries []ResourceConfig
		want    []string // fields with a problem; none for a valid config
	}{
		{"valid", []ResourceConfig{{Resources: []string{"secrets"}, Providers: []Provider{gcm(key("a", 32, 1), key("b", 16, 2)), box(key("c", 32, 3)), identity()}}}, nil},
		{"no providers", []ResourceConfig{{Resources: []string{"secrets"}}}, []string{"resources[0].providers"}},
		{"no resources", []ResourceConfig{{Providers: []Provider{identity()}}}, []string{"resources[0].resources"}},
		{"twice", []ResourceConfig{{Resources: []string{"secrets"}, Providers: []Provider{identity()}}, {Resources: []string{"secrets"}, Providers: []Provider{identity()}}}, []string{"resources[1].resources[0]"}},
		{"bad name", []ResourceConfig{{Resources: []string{"Secrets"}, Providers: []Provider{identity()}}}, []string{"resources[0].resources[0]"}},
		{"two kinds", []ResourceConfig{{Resources: []string{"secrets"}, Providers: []Provider{{Identity: &struct{}{}, AESGCM: &KeyList{Keys: []Key{key("a", 32, 1)}}}}}}, []string{"resources[0].providers[0]"}},
		{"aesgcm key size", []ResourceConfig{{Resources: []string{"secrets"}, Providers: []Provider{gcm(key("a", 20, 1))}}}, []string{"resources[0].providers[0].aesgcm.keys[0].secret"}},
		{"secretbox key size", []ResourceConfig{{Resources: []string{"secrets"}, Providers: []Provider{box(key("a", 16, 1))}}}, []string{"resources[0].providers[0].secretbox.keys[0].secret"}},
		{"not base64", []ResourceConfig{{Resources: []string{"secrets"}, Providers: []Provider{box(Key{Name: "a", Secret: "!!"})}}}, []string{"resources[0].providers[0].secretbox.keys[0].secret"}},
		{"duplicate key name", []ResourceConfig{{Resources: []string{"secrets"}, Providers: []Provider{gcm(key("a", 32, 1)), box(key("a", 32, 2))}}}, []string{"resources[0].providers[1].secretbox.keys[0].name"}},
		{"colon in key name", []ResourceConfig{{Resources: []string{"secrets"}, Providers: []Provider{gcm(key("a:b", 32, 1))}}}, []string{"resources[0].providers[0].aesgcm.keys[0].name"}},
		{"no keys", []ResourceConfig{{Resources: []string{"secrets"}, Providers: []Provider{gcm()}}}, []string{"resources[0].providers[0].aesgcm.keys"}},
		{"aescbc", []ResourceConfig{{Resources: []string{"secrets"}, Providers: []Provider{{AESCBC: &KeyList{Keys: []Key{key("a", 32, 1)}}}}}}, []string{"resources[0].providers[0].aescbc"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			errs := ValidateResources(nil, tc.entries)
			var fields []string
			for _, e := range errs {
				fields = append(fields, e.Field)
			}
			if !slices.Equal(fields, tc.want) {
				t.Errorf("problems with %q, want %q: %v", fields, tc.want, errs)
			}
		})
	}
}

func TestParse(t *testing.T) {
	doc := `apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: [secrets]
    providers:
      - secretbox:
          keys:
            - name: key1
              secret: ` + key("", 32, 7).Secret + `
      - identity: {}
`
	c, err := Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Resources) != 1 || c.Resources[0].Providers[0].Secretbox == nil || c.Resources[0].Providers[1].Identity == nil {
		t.Fatalf("parsed %+v", c)
	}
	if _, err := Parse([]byte(strings.Replace(doc, "identity: {}", "identiy: {}", 1))); err == nil {
		t.Fatal("a misspelt provider parsed")
	}
	if _, err := Parse([]byte(strings.Replace(doc, "kind: EncryptionConfiguration", "kind: Other", 1))); err == nil {
		t.Fatal("another kind parsed")
	}
}

func TestCovers(t *testing.T) {
	for _, tc := range []struct {
		name, group, plural string
		want                bool
	}{
		{"secrets", "", "secrets", true},
		{"secrets", "", "configmaps", false},
		{"deployments.apps", "apps", "deployments", true},
		{"deployments.apps", "", "deployments", false},
		{"*.apps", "apps", "replicasets", true},
		{"*.apps", "", "secrets", false},
		{"*.", "", "secrets", true},
		{"*.", "apps", "deployments", false},
		{"*.*", "rbac.authorization.k8s.io", "roles", true},
	} {
		if got := Covers(tc.name, tc.group, tc.plural); got != tc.want {
			t.Errorf("Covers(%q, %q, %q) = %v", tc.name, tc.group, tc.plural, got)
		}
	}
}

// TestStoreEncryptsAtRest writes through a Store with the transformer and
// reads etcd with its own client: the bytes there are ciphertext, while
// Get, List and Watch give the value back.
func TestStoreEncryptsAtRest(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := etcdtest.Start(t)
	tr := mustT(t, box(key("b1", 32, 5)), identity())
	s := storage.New(c, storage.WithTransformer("/registry/core/secrets/", tr))
	secret := []byte(`{"data":{"password":"supersecret"}}`)

	// Written before encryption was enabled: plaintext, still readable.
	before := "/registry/core/secrets/default/before"
	if _, err := storage.New(c).Create(ctx, before, secret); err != nil {
		t.Fatal(err)
	}
	events, _ := s.Watch(ctx, "/registry/core/secrets/", 0)
	rev, err := s.Create(ctx, etcdKey, secret)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := c.Get(ctx, etcdKey)
	if err != nil || len(raw.Kvs) != 1 {
		t.Fatalf("raw get: %v", err)
	}
	if bytes.Contains(raw.Kvs[0].Value, []byte("supersecret")) || !bytes.HasPrefix(raw.Kvs[0].Value, []byte("k8s:enc:secretbox:v1:b1:")) {
		t.Fatalf("etcd holds %q", raw.Kvs[0].Value)
	}
	got, err := s.Get(ctx, etcdKey)
	if err != nil || !bytes.Equal(got.Value, secret) || got.Stale {
		t.Fatalf("get: %+v %v", got, err)
	}
	old, err := s.Get(ctx, before)
	if err != nil || !bytes.Equal(old.Value, secret) || !old.Stale {
		t.Fatalf("get of a value written before encryption: %+v %v", old, err)
	}
	list, err := s.List(ctx, "/registry/core/secrets/", storage.ListOptions{})
	if err != nil || len(list.Items) != 2 || !bytes.Equal(list.Items[0].Value, secret) || !bytes.Equal(list.Items[1].Value, secret) {
		t.Fatalf("list: %+v %v", list, err)
	}
	select {
	case ev := <-events:
		if ev.KV.ModRevision != rev || !bytes.Equal(ev.KV.Value, secret) {
			t.Fatalf("watch event %+v", ev)
		}
	case <-ctx.Done():
		t.Fatal("no watch event")
	}
	// Updating the old value writes it encrypted.
	if _, _, err := s.Update(ctx, before, old.Value, old.ModRevision); err != nil {
		t.Fatal(err)
	}
	raw, _ = c.Get(ctx, before)
	if bytes.Contains(raw.Kvs[0].Value, []byte("supersecret")) {
		t.Fatalf("after the update etcd holds %q", raw.Kvs[0].Value)
	}
	// Other prefixes are left alone.
	if _, err := s.Create(ctx, "/registry/core/configmaps/default/c", secret); err != nil {
		t.Fatal(err)
	}
	raw, _ = c.Get(ctx, "/registry/core/configmaps/default/c")
	if !bytes.Equal(raw.Kvs[0].Value, secret) {
		t.Fatalf("a configmap was transformed: %q", raw.Kvs[0].Value)
	}
	// A store that lost the key cannot read the value: an error, not
	// ciphertext handed on as the object.
	lost := storage.New(c, storage.WithTransformer("/registry/core/secrets/", mustT(t, identity())))
	if _, err := lost.Get(ctx, etcdKey); !errors.Is(err, storage.ErrTransform) {
		t.Fatalf("get without the key: %v", err)
	}
}
