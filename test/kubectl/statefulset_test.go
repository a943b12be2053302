package main_test

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// dbManifest is a headless Service and a StatefulSet of two pods with a
// volume claim template, named db in ns.
func dbManifest(ns, image string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Service
metadata: {name: db, namespace: %[1]s}
spec:
  clusterIP: None
  selector: {app: db}
  ports: [{port: 80}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db, namespace: %[1]s}
spec:
  serviceName: db
  replicas: 2
  podManagementPolicy: Parallel
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers:
      - name: c
        image: %[2]s
        volumeMounts: [{name: data, mountPath: /data}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 1Gi}}
`, ns, image)
}

// waitOut runs kubectl until its output is want, for at most 20s.
func (c *cluster) waitOut(t *testing.T, want string, args ...string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		out := c.ok(t, args...)
		if out == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("kubectl %s: got %q 20s on, want %q", strings.Join(args, " "), out, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestStatefulSetRollout: kubectl's StatefulSet table, scale, and
// rollout history, undo and status, which read the ControllerRevisions
// the controller writes. No kubelet runs here, so no pod becomes ready.
func TestStatefulSetRollout(t *testing.T) {
	c := setup(t)
	ns := c.namespace(t)
	// Created, not applied: kubectl warns on an undo of an applied object
	// (its last-applied annotation is not rolled back), as upstream.
	if r := c.run(t, dbManifest(ns, "busybox:1"), "create", "-f", "-"); r.Code != 0 {
		t.Fatalf("kubectl create: %s", r)
	}
	out := c.ok(t, "get", "statefulsets", "-n", ns)
	wantHeader(t, out, "NAME", "READY", "AGE")
	if r := row(t, out, 0, "db"); r[1] != "0/2" {
		t.Errorf("row %q, want READY 0/2", r)
	}
	c.waitOut(t, "db-0 db-1", "get", "pods", "-n", ns, "-l", "app=db", "-o", "jsonpath={.items[*].metadata.name}")
	wantOut(t, "hostname and subdomain", c.ok(t, "get", "pod", "db-1", "-n", ns, "-o", "jsonpath={.spec.hostname}.{.spec.subdomain}"), "db-1.db")

	wantOut(t, "set image", c.ok(t, "set", "image", "statefulset/db", "-n", ns, "c=busybox:2"), "statefulset.apps/db image updated\n")
	history := "statefulset.apps/db \nREVISION  CHANGE-CAUSE\n1         <none>\n2         <none>\n\n"
	c.waitOut(t, history, "rollout", "history", "statefulset/db", "-n", ns)
	wantContains(t, "history --revision=2", c.ok(t, "rollout", "history", "statefulset/db", "-n", ns, "--revision=2"), "Image:\tbusybox:2")
	wantOut(t, "rollout status", c.ok(t, "rollout", "status", "statefulset/db", "-n", ns, "--watch=false"), "Waiting for 2 pods to be ready...\n")

	wantOut(t, "undo", c.ok(t, "rollout", "undo", "statefulset/db", "-n", ns), "statefulset.apps/db rolled back\n")
	wantOut(t, "image after undo", c.ok(t, "get", "sts", "db", "-n", ns, "-o", "jsonpath={.spec.template.spec.containers[0].image}"), "busybox:1")
	// The first template is revision 3 now, and undo to it is a no-op.
	history = "statefulset.apps/db \nREVISION  CHANGE-CAUSE\n2         <none>\n3         <none>\n\n"
	c.waitOut(t, history, "rollout", "history", "statefulset/db", "-n", ns)
	wantContains(t, "undo to the current revision", c.ok(t, "rollout", "undo", "statefulset/db", "-n", ns, "--to-revision=3"),
		"skipped rollback (current template already matches revision 3)")
	out = c.ok(t, "get", "controllerrevisions", "-n", ns)
	wantHeader(t, out, "NAME", "CONTROLLER", "REVISION", "AGE")
	wantContains(t, "revisions", out, "statefulset.apps/db")

	wantOut(t, "scale", c.ok(t, "scale", "statefulset/db", "-n", ns, "--replicas=3"), "statefulset.apps/db scaled\n")
	c.waitOut(t, "db-0 db-1 db-2", "get", "pods", "-n", ns, "-l", "app=db", "-o", "jsonpath={.items[*].metadata.name}")
	c.ok(t, "delete", "statefulset", "db", "-n", ns)
	c.waitOut(t, "", "get", "pods", "-n", ns, "-l", "app=db", "-o", "jsonpath={.items[*].metadata.name}")
}
