package apiserver

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"kforge.dev/kforge/controlplane/apiserver/internal/etcdtest"
)

// answer is one HTTP exchange, decoded as a Status when it is one.
type answer struct {
	code   int
	header http.Header
	status metav1.Status
	body   string
}

func send(t *testing.T, c *http.Client, method, url, ct string, body io.Reader) answer {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	a := answer{code: resp.StatusCode, header: resp.Header, body: string(b)}
	_ = json.Unmarshal(b, &a.status)
	return a
}

// causeFields lists the fields of a Status' details.causes.
func causeFields(st metav1.Status) []string {
	var out []string
	if st.Details != nil {
		for _, c := range st.Details.Causes {
			out = append(out, c.Field)
		}
	}
	return out
}

// TestAnswersAsUpstream sends one request of each class a careless or
// hostile client might and checks kube-apiserver's answer: status code,
// Status reason and, for validation, the field in details.causes. Where a
// refused request must leave the object alone, after checks that it did.
func TestAnswersAsUpstream(t *testing.T) {
	e := startServer(t)
	ctx := context.Background()
	ns := "answers"
	mustNS(t, e, ns)
	admin := e.httpClient(t, "kubernetes-admin", "system:masters")
	// alice may get and patch ConfigMaps in the namespace, not create them.
	alice := e.httpClient(t, "alice")
	if _, err := e.admin.RbacV1().Roles(ns).Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "patcher"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get", "patch"}}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.admin.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "alice-patcher"},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "patcher"},
		Subjects: []rbacv1.Subject{{Kind: "User", Name: "alice"}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	labels := map[string]string{"app": "web"}
	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "web"}, Spec: appsv1.DeploymentSpec{
		Selector: &metav1.LabelSelector{MatchLabels: labels},
		Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "nginx:1"}}}}}}
	if _, err := e.admin.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cmObj, err := e.admin.CoreV1().ConfigMaps(ns).Create(ctx, cm("cm", map[string]string{"k": "v"}), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	frozen := cm("frozen", map[string]string{"k": "v"})
	frozen.Immutable = ptr(true)
	if _, err := e.admin.CoreV1().ConfigMaps(ns).Create(ctx, frozen, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.admin.CoreV1().Services(ns).Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "svc"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.admin.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "pod"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "nginx:1"}}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	api := e.host + "/api/v1/namespaces/" + ns
	apps := e.host + "/apis/apps/v1/namespaces/" + ns
	rbac := e.host + "/apis/rbac.authorization.k8s.io/v1/namespaces/" + ns
	manyOps := "[" + strings.Repeat(`{"op":"test","path":"/kind","value":"ConfigMap"},`, maxJSONPatchOperations) + `{"op":"test","path":"/kind","value":"ConfigMap"}]`
	bigAnnotation := strings.Repeat("x", 257<<10)
	staleRV := fmt.Sprint(mustAtoi(t, cmObj.ResourceVersion) - 1)
	const (
		jsonCT  = "application/json"
		jsonP   = "application/json-patch+json"
		mergeP  = "application/merge-patch+json"
		smpP    = "application/strategic-merge-patch+json"
		applyP  = "application/apply-patch+yaml"
		invalid = metav1.StatusReasonInvalid
	)
	cases := []struct {
		name            string
		client          *http.Client
		method, url, ct string
		body            string
		code            int
		reason          metav1.StatusReason
		cause           string // a field details.causes must name
		after           func(t *testing.T)
	}{
		// 1. Limits.
		{name: "json patch of 10001 operations", method: "PATCH", url: api + "/configmaps/cm", ct: jsonP, body: manyOps,
			code: 413, reason: metav1.StatusReasonRequestEntityTooLarge},
		{name: "body over 3 MiB", method: "POST", url: api + "/configmaps", ct: jsonCT, body: `{"data":{"a":"` + strings.Repeat("x", 4<<20) + `"}}`,
			code: 413, reason: metav1.StatusReasonRequestEntityTooLarge},
		{name: "malformed timeout", method: "GET", url: api + "/configmaps/cm?timeout=soon", code: 400, reason: metav1.StatusReasonBadRequest},

		// 2. Verbs.
		{name: "DELETE of a scale subresource", method: "DELETE", url: apps + "/deployments/web/scale",
			code: 405, reason: metav1.StatusReasonMethodNotAllowed, after: func(t *testing.T) {
				if _, err := e.admin.AppsV1().Deployments(ns).Get(ctx, "web", metav1.GetOptions{}); err != nil {
					t.Fatalf("the deployment is gone: %v", err)
				}
			}},
		{name: "DELETE of a status subresource", method: "DELETE", url: api + "/pods/pod/status",
			code: 405, reason: metav1.StatusReasonMethodNotAllowed, after: func(t *testing.T) {
				if _, err := e.admin.CoreV1().Pods(ns).Get(ctx, "pod", metav1.GetOptions{}); err != nil {
					t.Fatalf("the pod is gone: %v", err)
				}
			}},
		{name: "POST to a status subresource", method: "POST", url: apps + "/deployments/web/status", ct: jsonCT, body: "{}",
			code: 405, reason: metav1.StatusReasonMethodNotAllowed},
		{name: "deletecollection of namespaces", method: "DELETE", url: e.host + "/api/v1/namespaces",
			code: 405, reason: metav1.StatusReasonMethodNotAllowed, after: func(t *testing.T) {
				if _, err := e.admin.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); err != nil {
					t.Fatalf("the namespace is gone: %v", err)
				}
			}},

		// 4. Apply and patch.
		{name: "apply that creates without the create verb", client: alice, method: "PATCH", url: api + "/configmaps/new?fieldManager=alice", ct: applyP,
			body: "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: new}\ndata: {k: v}\n", code: 403, reason: metav1.StatusReasonForbidden},
		{name: "apply that updates with the patch verb", client: alice, method: "PATCH", url: api + "/configmaps/cm?fieldManager=alice", ct: applyP,
			body: "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\ndata: {other: v}\n", code: 200},
		{name: "merge patch with a stale resourceVersion", method: "PATCH", url: api + "/configmaps/cm", ct: mergeP,
			body: `{"metadata":{"resourceVersion":"` + staleRV + `"},"data":{"k":"stale"}}`, code: 409, reason: metav1.StatusReasonConflict},
		{name: "strategic patch with a stale resourceVersion", method: "PATCH", url: api + "/configmaps/cm", ct: smpP,
			body: `{"metadata":{"resourceVersion":"` + staleRV + `"},"data":{"k":"stale"}}`, code: 409, reason: metav1.StatusReasonConflict},
		{name: "dryRun with an unknown value", method: "POST", url: api + "/configmaps?dryRun=Yes", ct: jsonCT,
			body: `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"dry"}}`, code: 422, reason: invalid, cause: "dryRun"},
		{name: "fieldValidation with an unknown value", method: "PUT", url: api + "/configmaps/cm?fieldValidation=Loud", ct: jsonCT,
			body: `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"cm"}}`, code: 422, reason: invalid, cause: "fieldValidation"},
		{name: "PUT without a resourceVersion is unconditional", method: "PUT", url: api + "/configmaps/cm", ct: jsonCT,
			body: `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"cm"},"data":{"k":"put"}}`, code: 200},
		{name: "limit that is not a number", method: "GET", url: api + "/configmaps?limit=ten", code: 400, reason: metav1.StatusReasonBadRequest},
		{name: "gracePeriodSeconds that is not a number", method: "DELETE", url: api + "/configmaps/cm?gracePeriodSeconds=soon", code: 400, reason: metav1.StatusReasonBadRequest},

		// 5. Validation.
		{name: "name that is not a DNS subdomain", method: "POST", url: api + "/configmaps", ct: jsonCT,
			body: `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"Bad_Name"}}`, code: 422, reason: invalid, cause: "metadata.name"},
		{name: "label value too long", method: "POST", url: api + "/configmaps", ct: jsonCT,
			body: `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"l","labels":{"a":"` + strings.Repeat("x", 64) + `"}}}`, code: 422, reason: invalid, cause: "metadata.labels"},
		{name: "annotations over 256 KiB", method: "POST", url: api + "/configmaps", ct: jsonCT,
			body: `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a","annotations":{"a":"` + bigAnnotation + `"}}}`, code: 422, reason: invalid, cause: "metadata.annotations"},
		{name: "pod spec change", method: "PATCH", url: api + "/pods/pod", ct: mergeP,
			body: `{"spec":{"restartPolicy":"Never"}}`, code: 422, reason: invalid, cause: "spec"},
		{name: "pod mounting a volume it does not have", method: "POST", url: api + "/pods", ct: jsonCT,
			body: `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"v"},"spec":{"containers":[{"name":"c","image":"i","volumeMounts":[{"name":"nope","mountPath":"/x"}]}]}}`,
			code: 422, reason: invalid, cause: "spec.containers[0].volumeMounts[0].name"},
		{name: "pod volume with two sources", method: "POST", url: api + "/pods", ct: jsonCT,
			body: `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"v"},"spec":{"volumes":[{"name":"d","emptyDir":{},"hostPath":{"path":"/tmp"}}],"containers":[{"name":"c","image":"i"}]}}`,
			code: 422, reason: invalid, cause: "spec.volumes[0]"},
		{name: "pod request above its limit", method: "POST", url: api + "/pods", ct: jsonCT,
			body: `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"v"},"spec":{"containers":[{"name":"c","image":"i","resources":{"requests":{"cpu":"2"},"limits":{"cpu":"1"}}}]}}`,
			code: 422, reason: invalid, cause: "spec.containers[0].resources.requests[cpu]"},
		{name: "pod env with value and valueFrom", method: "POST", url: api + "/pods", ct: jsonCT,
			body: `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"v"},"spec":{"containers":[{"name":"c","image":"i","env":[{"name":"A","value":"x","valueFrom":{"fieldRef":{"fieldPath":"metadata.name"}}}]}]}}`,
			code: 422, reason: invalid, cause: "spec.containers[0].env[0].valueFrom"},
		{name: "pod probe with two handlers", method: "POST", url: api + "/pods", ct: jsonCT,
			body: `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"v"},"spec":{"containers":[{"name":"c","image":"i","readinessProbe":{"exec":{"command":["true"]},"tcpSocket":{"port":80}}}]}}`,
			code: 422, reason: invalid, cause: "spec.containers[0].readinessProbe"},
		{name: "deployment template with an unknown volume", method: "POST", url: apps + "/deployments", ct: jsonCT,
			body: `{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"v"},"spec":{"selector":{"matchLabels":{"a":"b"}},"template":{"metadata":{"labels":{"a":"b"}},"spec":{"containers":[{"name":"c","image":"i","volumeMounts":[{"name":"nope","mountPath":"/x"}]}]}}}}`,
			code: 422, reason: invalid, cause: "spec.template.spec.containers[0].volumeMounts[0].name"},
		{name: "pod nodeName set by update, not binding", method: "PATCH", url: api + "/pods/pod", ct: mergeP,
			body: `{"spec":{"nodeName":"w1"}}`, code: 422, reason: invalid, cause: "spec"},
		{name: "pod image change", method: "PATCH", url: api + "/pods/pod", ct: smpP,
			body: `{"spec":{"containers":[{"name":"c","image":"nginx:2"}]}}`, code: 200},
		{name: "service clusterIP change", method: "PATCH", url: api + "/services/svc", ct: mergeP,
			body: `{"spec":{"clusterIP":"10.96.200.200","clusterIPs":["10.96.200.200"]}}`, code: 422, reason: invalid, cause: "spec.clusterIP"},
		{name: "service port 0", method: "POST", url: api + "/services", ct: jsonCT,
			body: `{"apiVersion":"v1","kind":"Service","metadata":{"name":"p0"},"spec":{"ports":[{"port":0}]}}`, code: 422, reason: invalid, cause: "spec.ports[0].port"},
		{name: "service port 65536", method: "POST", url: api + "/services", ct: jsonCT,
			body: `{"apiVersion":"v1","kind":"Service","metadata":{"name":"p1"},"spec":{"ports":[{"port":65536}]}}`, code: 422, reason: invalid, cause: "spec.ports[0].port"},
		{name: "ExternalName service with a clusterIP", method: "POST", url: api + "/services", ct: jsonCT,
			body: `{"apiVersion":"v1","kind":"Service","metadata":{"name":"ext"},"spec":{"type":"ExternalName","externalName":"example.com","clusterIP":"10.96.0.50"}}`,
			code: 422, reason: invalid, cause: "spec.clusterIPs"},
		{name: "deployment selector change", method: "PATCH", url: apps + "/deployments/web", ct: mergeP,
			body: `{"spec":{"selector":{"matchLabels":{"app":"web","v":"2"}},"template":{"metadata":{"labels":{"app":"web","v":"2"}}}}}`,
			code: 422, reason: invalid, cause: "spec.selector"},
		{name: "immutable ConfigMap data change", method: "PATCH", url: api + "/configmaps/frozen", ct: mergeP,
			body: `{"data":{"k":"changed"}}`, code: 422, reason: invalid, cause: "data"},
		{name: "RBAC rule without verbs", method: "POST", url: rbac + "/roles", ct: jsonCT,
			body: `{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"Role","metadata":{"name":"noverbs"},"rules":[{"apiGroups":[""],"resources":["pods"]}]}`,
			code: 422, reason: invalid, cause: "rules[0].verbs"},
		{name: "RoleBinding roleRef change", method: "PATCH", url: rbac + "/rolebindings/alice-patcher", ct: mergeP,
			body: `{"roleRef":{"name":"other"}}`, code: 422, reason: invalid, cause: "roleRef"},
		{name: "Secret stringData", method: "POST", url: api + "/secrets", ct: jsonCT,
			body: `{"apiVersion":"v1","kind":"Secret","metadata":{"name":"s"},"stringData":{"password":"hunter2"}}`, code: 201,
			after: func(t *testing.T) {
				s, err := e.admin.CoreV1().Secrets(ns).Get(ctx, "s", metav1.GetOptions{})
				if err != nil {
					t.Fatal(err)
				}
				if string(s.Data["password"]) != "hunter2" || s.StringData != nil {
					t.Fatalf("data %q stringData %v: want data.password and no stringData", s.Data, s.StringData)
				}
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.client
			if c == nil {
				c = admin
			}
			a := send(t, c, tc.method, tc.url, tc.ct, strings.NewReader(tc.body))
			if a.code != tc.code {
				t.Fatalf("%s %s: %d %s, want %d", tc.method, tc.url, a.code, trim(a.body), tc.code)
			}
			if tc.reason != "" && a.status.Reason != tc.reason {
				t.Fatalf("reason %q, want %q (%s)", a.status.Reason, tc.reason, trim(a.body))
			}
			if tc.cause != "" && !contains(causeFields(a.status), tc.cause) {
				t.Fatalf("causes %v, want one for %s (%s)", causeFields(a.status), tc.cause, trim(a.body))
			}
			if tc.after != nil {
				tc.after(t)
			}
		})
	}
}

func trim(s string) string {
	if len(s) > 300 {
		return s[:300] + "..."
	}
	return s
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func mustAtoi(t *testing.T, s string) int64 {
	t.Helper()
	var n int64
	if _, err := fmt.Sscan(s, &n); err != nil {
		t.Fatal(err)
	}
	return n
}

// slowBody is a request body that sends nothing until closed: a request
// that stays in flight as long as the test wants. The client closes it
// once the answer comes.
type slowBody struct {
	done chan struct{}
	once *sync.Once
}

func newSlowBody() slowBody { return slowBody{done: make(chan struct{}), once: &sync.Once{}} }

func (b slowBody) Read([]byte) (int, error) {
	<-b.done
	return 0, io.EOF
}

func (b slowBody) Close() error {
	b.once.Do(func() { close(b.done) })
	return nil
}

// TestInFlightWatchAndTimeoutLimits fills the mutating in-flight cap with
// a request whose body never comes: another user's write gets 429 with
// Retry-After (before any authorization, as upstream's filter), while
// system:masters still gets an answer; the stalled request itself is
// answered 504 once its ?timeout= passes. A second watch past the
// per-user cap is a 429 too.
func TestInFlightWatchAndTimeoutLimits(t *testing.T) {
	e := startServerOn(t, etcdtest.Start(t), func(o *Options) {
		o.Limits = Limits{MaxMutatingRequestsInFlight: 1, MaxWatchesPerUser: 1}
	})
	bob := e.httpClient(t, "bob")
	admin := e.httpClient(t, "kubernetes-admin", "system:masters")
	// The stalled request goes over HTTP/2, where a server may answer
	// before reading the body (HTTP/1.1's server drains a body first).
	admin2 := e.httpClient(t, "kubernetes-admin", "system:masters")
	admin2.Transport.(*http.Transport).ForceAttemptHTTP2 = true
	admin2.Timeout = time.Minute
	url := e.host + "/api/v1/namespaces/default/configmaps"

	stalled := newSlowBody()
	stalledAnswer := make(chan answer, 1)
	start := time.Now()
	go func() { stalledAnswer <- send(t, admin2, "POST", url+"?timeout=8s", "application/json", stalled) }()
	defer stalled.Close()

	// Wait until the stalled request holds the one mutating slot.
	deadline := time.Now().Add(30 * time.Second)
	for len(e.srv.inflight.mutating) == 0 {
		select {
		case a := <-stalledAnswer:
			t.Fatalf("the stalled request was answered before it stalled: %d %s", a.code, trim(a.body))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("the stalled request never got in flight")
		}
		time.Sleep(10 * time.Millisecond)
	}
	a := send(t, bob, "POST", url, "application/json", strings.NewReader(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"}}`))
	if a.code != 429 || a.status.Reason != metav1.StatusReasonTooManyRequests || a.header.Get("Retry-After") == "" {
		t.Fatalf("past the in-flight cap: %d %q Retry-After %q, want 429 TooManyRequests with Retry-After", a.code, a.status.Reason, a.header.Get("Retry-After"))
	}
	if a := send(t, admin, "POST", url, "application/json", strings.NewReader(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"m"}}`)); a.code != 201 {
		t.Fatalf("system:masters past the cap: %d %s, want 201", a.code, trim(a.body))
	}
	// Reads are counted apart.
	if a := send(t, admin, "GET", url, "", nil); a.code != 200 {
		t.Fatalf("a read while writes are full: %d", a.code)
	}
	select {
	case a := <-stalledAnswer:
		if a.code != 504 || a.status.Reason != metav1.StatusReasonTimeout {
			t.Fatalf("stalled request: %d %q, want 504 Timeout", a.code, a.status.Reason)
		}
		t.Logf("stalled request answered 504 after %s", time.Since(start).Round(time.Millisecond))
	case <-time.After(30 * time.Second):
		t.Fatal("the stalled request was not answered past its timeout")
	}

	// Watches: one per user here.
	watchURL := e.host + "/api/v1/namespaces/default/configmaps?watch=true"
	req, _ := http.NewRequest("GET", watchURL, nil)
	resp, err := admin.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("first watch: %d", resp.StatusCode)
	}
	if a := send(t, admin, "GET", watchURL, "", nil); a.code != 429 || a.status.Reason != metav1.StatusReasonTooManyRequests {
		t.Fatalf("second watch of one user: %d %q, want 429", a.code, a.status.Reason)
	}
}
