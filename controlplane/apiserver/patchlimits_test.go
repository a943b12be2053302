package apiserver

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// procStatusKB reads a field (VmRSS, VmHWM) of /proc/self/status in KiB.
func procStatusKB(t *testing.T, name string) int64 {
	t.Helper()
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Skipf("no /proc/self/status: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+":"); ok {
			var kb int64
			if _, err := fmt.Sscan(strings.TrimSuffix(strings.TrimSpace(v), " kB"), &kb); err == nil {
				return kb
			}
		}
	}
	t.Skipf("no %s in /proc/self/status", name)
	return 0
}

// TestCopyDoublingPatchIsRefused sends the JSON patch that made the
// server grow without bound: eleven copy operations, each copying the
// ConfigMap's data (a 200 KB value, then everything copied so far) into
// itself. The accumulated copy limit stops it at 3 MiB: a 422 while the
// process' peak RSS grows by less than 100 MiB (the time is logged).
func TestCopyDoublingPatchIsRefused(t *testing.T) {
	e := startServer(t)
	ctx := context.Background()
	cms := e.admin.CoreV1().ConfigMaps("default")
	if _, err := cms.Create(ctx, cm("big", map[string]string{"v": strings.Repeat("x", 200<<10)}), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var ops []string
	for i := range 11 {
		ops = append(ops, fmt.Sprintf(`{"op":"copy","from":"/data","path":"/data/c%d"}`, i))
	}
	patch := "[" + strings.Join(ops, ",") + "]"

	runtime.GC()
	before := procStatusKB(t, "VmRSS")
	// Reset the peak RSS mark so VmHWM measures this request alone.
	peakReset := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil
	start := time.Now()
	_, err := cms.Patch(ctx, "big", types.JSONPatchType, []byte(patch), metav1.PatchOptions{})
	took := time.Since(start)
	after := procStatusKB(t, "VmRSS")
	peak := after
	if peakReset {
		peak = procStatusKB(t, "VmHWM")
	}
	growthMiB := float64(peak-before) / 1024
	t.Logf("copy-doubling patch: answered in %s, RSS %d KiB before, peak %d KiB (+%.1f MiB, peak mark reset: %v): %v",
		took.Round(time.Millisecond), before, peak, growthMiB, peakReset, err)
	// Upstream's answer: 422 Invalid, without the library's words.
	if se, ok := err.(apierrors.APIStatus); !ok || se.Status().Code != 422 || se.Status().Reason != metav1.StatusReasonInvalid {
		t.Fatalf("copy-doubling patch: %v, want 422 Invalid", err)
	}
	// The answer time is logged above, not asserted: on a loaded machine
	// it says nothing about the server. What bounds the work is the
	// memory check below and the 422 itself.
	// The race detector's shadow memory multiplies what every allocation
	// costs (5-10x, by its documentation); +100 MiB is for a normal build.
	limit := 100.0
	if raceDetector {
		limit = 500
	}
	if growthMiB >= limit {
		t.Errorf("RSS grew by %.1f MiB, want < %.0f", growthMiB, limit)
	}
	got, err := cms.Get(ctx, "big", metav1.GetOptions{})
	if err != nil || len(got.Data) != 1 {
		t.Fatalf("the ConfigMap changed: %d keys, %v", len(got.Data), err)
	}
}

// TestCopyLimitStopsTheDoublingPatch shows what refused the patch above:
// the json-patch library's accumulated copy limit, as the server sets it.
func TestCopyLimitStopsTheDoublingPatch(t *testing.T) {
	setJSONPatchCopyLimit(DefaultJSONPatchMaxCopyBytes)
	doc := []byte(`{"data":{"v":"` + strings.Repeat("x", 200<<10) + `"}}`)
	var ops []string
	for i := range 11 {
		ops = append(ops, fmt.Sprintf(`{"op":"copy","from":"/data","path":"/data/c%d"}`, i))
	}
	p, err := decodeJSONPatch([]byte("[" + strings.Join(ops, ",") + "]"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = applyJSONPatch(p, doc)
	var limit *jsonpatch.AccumulatedCopySizeError
	if !errors.As(err, &limit) {
		t.Fatalf("applyJSONPatch: %v, want the accumulated copy size error", err)
	}
	// Four doublings (3,000 KiB copied) stay under the 3 MiB limit.
	if _, err := applyJSONPatch(p[:4], doc); err != nil {
		t.Fatalf("four copies: %v", err)
	}
}

// TestApplyServiceWithOnePortOnTwoProtocols is the DNS Service: port 53
// over UDP and TCP. Upstream's schema keys Service ports by port and
// protocol, so the apply works; a second manager changing a field the
// first owns gets upstream's conflict.
func TestApplyServiceWithOnePortOnTwoProtocols(t *testing.T) {
	e := startServer(t)
	ctx := context.Background()
	svcs := e.admin.CoreV1().Services("default")
	apply := func(manager, body string) error {
		_, err := svcs.Patch(ctx, "dns", types.ApplyYAMLPatchType, []byte(body), metav1.PatchOptions{FieldManager: manager})
		return err
	}
	const dns = `apiVersion: v1
kind: Service
metadata: {name: dns}
spec:
  selector: {k8s-app: dns}
  ports:
  - {name: dns, port: 53, protocol: UDP, targetPort: 53}
  - {name: dns-tcp, port: 53, protocol: TCP, targetPort: 53}
`
	if err := apply("first", dns); err != nil {
		t.Fatalf("apply of ports 53/UDP and 53/TCP: %v", err)
	}
	got, err := svcs.Get(ctx, "dns", metav1.GetOptions{})
	if err != nil || len(got.Spec.Ports) != 2 {
		t.Fatalf("after apply: %v %v", got, err)
	}
	// Applying it again is a no-op, not a duplicate-key error.
	if err := apply("first", dns); err != nil {
		t.Fatalf("second apply by the same manager: %v", err)
	}
	err = apply("second", `apiVersion: v1
kind: Service
metadata: {name: dns}
spec:
  ports:
  - {port: 53, protocol: UDP, targetPort: 5353}
`)
	if !apierrors.IsConflict(err) {
		t.Fatalf("conflicting apply: %v, want 409 Conflict", err)
	}
	msg := err.Error()
	for _, want := range []string{"Apply failed with 1 conflict", `conflict with "first"`, `.spec.ports[port=53,protocol="UDP"].targetPort`} {
		if !strings.Contains(msg, want) {
			t.Fatalf("conflict message %q lacks %q", msg, want)
		}
	}
}
