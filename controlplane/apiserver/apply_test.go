package apiserver

import (
	"context"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

func TestServerSideApply(t *testing.T) {
	e := startServer(t)
	ctx := context.Background()
	cms := e.admin.CoreV1().ConfigMaps("default")
	apply := func(manager, body string, force bool) error {
		_, err := cms.Patch(ctx, "cfg", types.ApplyYAMLPatchType, []byte(body), metav1.PatchOptions{FieldManager: manager, Force: &force})
		return err
	}
	// Apply creates a missing object.
	if err := apply("alice", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\ndata: {a: '1', b: '2'}\n", false); err != nil {
		t.Fatal(err)
	}
	got, err := cms.Get(ctx, "cfg", metav1.GetOptions{})
	if err != nil || got.Data["a"] != "1" {
		t.Fatalf("after apply: %v %v", got, err)
	}
	owners := map[string]string{}
	for _, m := range got.ManagedFields {
		owners[m.Manager] = string(m.Operation)
	}
	if owners["alice"] != "Apply" {
		t.Fatalf("managed fields: %+v", got.ManagedFields)
	}
	// A second manager touching alice's field conflicts...
	err = apply("bob", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\ndata: {a: 'x'}\n", false)
	if !apierrors.IsConflict(err) {
		t.Fatalf("conflicting apply: %v", err)
	}
	// ...unless forced, which moves the field to bob.
	if err := apply("bob", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\ndata: {a: 'x'}\n", true); err != nil {
		t.Fatal(err)
	}
	// alice re-applies without "a": it stays (bob owns it); without "b":
	// it goes (she owned it alone).
	if err := apply("alice", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\ndata: {c: '3'}\n", false); err != nil {
		t.Fatal(err)
	}
	got, _ = cms.Get(ctx, "cfg", metav1.GetOptions{})
	if got.Data["a"] != "x" || got.Data["c"] != "3" || got.Data["b"] != "" {
		t.Fatalf("data after the applies: %v", got.Data)
	}
	// An ordinary update is recorded as an Update by its manager.
	got.Data["d"] = "4"
	if _, err := cms.Update(ctx, got, metav1.UpdateOptions{FieldManager: "carol"}); err != nil {
		t.Fatal(err)
	}
	got, _ = cms.Get(ctx, "cfg", metav1.GetOptions{})
	found := false
	for _, m := range got.ManagedFields {
		found = found || m.Manager == "carol" && m.Operation == metav1.ManagedFieldsOperationUpdate
	}
	if !found {
		t.Fatalf("carol's update not tracked: %+v", got.ManagedFields)
	}
	// A no-op update keeps the resource version.
	again, err := cms.Update(ctx, got, metav1.UpdateOptions{FieldManager: "carol"})
	if err != nil || again.ResourceVersion != got.ResourceVersion {
		t.Fatalf("no-op update changed the version: %v %s → %s", err, got.ResourceVersion, again.ResourceVersion)
	}
}
