package roleconfig

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"
)

// fastElection keeps the tests short: a lost Lease shows within 0.5 s.
func fastElection() LeaderElection {
	le := DefaultLeaderElection("kforge-test")
	le.LeaseDuration, le.RenewDeadline, le.RetryPeriod = time.Second, 500*time.Millisecond, 100*time.Millisecond
	return le
}

func holder(t *testing.T, client kubernetes.Interface) string {
	t.Helper()
	l, err := client.CoordinationV1().Leases(DefaultLeaseNamespace).Get(context.Background(), "kforge-test", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return ptr.Deref(l.Spec.HolderIdentity, "")
}

// run starts c.Run and returns its result channel.
func run(ctx context.Context, c Campaign) <-chan error {
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	return done
}

func wait[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

func TestCampaignOff(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan struct{})
	done := run(ctx, Campaign{Config: LeaderElection{}, Lead: func(ctx context.Context) error {
		close(started)
		<-ctx.Done()
		return nil
	}})
	wait(t, started, "Lead without leader election")
	cancel()
	if err := wait(t, done, "Run"); err != nil {
		t.Fatalf("Run = %v", err)
	}
}

func TestCampaignShutdownReleasesAfterLead(t *testing.T) {
	client := fake.NewClientset()
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan struct{})
	heldAtEnd := make(chan string, 1)
	done := run(ctx, Campaign{Config: fastElection(), Client: client, Identity: "me", Lead: func(lctx context.Context) error {
		close(started)
		<-lctx.Done()
		heldAtEnd <- holder(t, client) // still ours: Lead ends before the release
		return nil
	}})
	wait(t, started, "leading")
	cancel()
	if err := wait(t, done, "Run"); err != nil {
		t.Fatalf("Run after cancel = %v, want nil", err)
	}
	if h := <-heldAtEnd; h != "me" {
		t.Errorf("the Lease was held by %q while Lead finished, want me", h)
	}
	if h := holder(t, client); h != "" {
		t.Errorf("the Lease is still held by %q after Run, want it released", h)
	}
}

func TestCampaignLostLease(t *testing.T) {
	client := fake.NewClientset()
	// Set before any use: the fake's reactor chain is not safe to change
	// while in use.
	var partitioned atomic.Bool
	client.PrependReactor("*", "leases", func(k8stesting.Action) (bool, runtime.Object, error) {
		return partitioned.Load(), nil, errors.New("connection refused")
	})
	started, leadDone := make(chan struct{}), make(chan struct{})
	done := run(context.Background(), Campaign{Config: fastElection(), Client: client, Identity: "me", Lead: func(lctx context.Context) error {
		close(started)
		<-lctx.Done()
		close(leadDone)
		return nil
	}})
	wait(t, started, "leading")
	// The apiserver stops answering this instance (a network partition):
	// renewals fail until the renew deadline passes.
	partitioned.Store(true)
	if err := wait(t, done, "Run"); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("Run = %v, want ErrLeaseLost", err)
	}
	select {
	case <-leadDone:
	default:
		t.Error("Run returned before Lead did")
	}
}

func TestCampaignLeadError(t *testing.T) {
	client := fake.NewClientset()
	boom := errors.New("a controller could not start")
	done := run(context.Background(), Campaign{Config: fastElection(), Client: client, Identity: "me",
		Lead: func(context.Context) error { return boom }})
	if err := wait(t, done, "Run"); !errors.Is(err, boom) {
		t.Fatalf("Run = %v, want Lead's error", err)
	}
	if h := holder(t, client); h != "" {
		t.Errorf("the Lease is held by %q after Lead failed, want it released", h)
	}
}

func TestCampaignStandsBy(t *testing.T) {
	now := metav1.NewMicroTime(time.Now())
	client := fake.NewClientset(&coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: "kforge-test", Namespace: DefaultLeaseNamespace},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To("other"), LeaseDurationSeconds: ptr.To[int32](60),
			AcquireTime: &now, RenewTime: &now},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	led := false
	err := Campaign{Config: fastElection(), Client: client, Identity: "me",
		Lead: func(context.Context) error { led = true; return nil }}.Run(ctx)
	if err != nil || led {
		t.Fatalf("Run = %v, led %v; want nil without leading", err, led)
	}
	if h := holder(t, client); h != "other" {
		t.Errorf("holder %q, want other", h)
	}
}

func TestID(t *testing.T) {
	le := DefaultLeaderElection("x")
	a, b := le.ID(), le.ID()
	if a == b || !strings.Contains(a, "_") {
		t.Errorf("IDs %q and %q: want host_random, different each time", a, b)
	}
	le.Identity = "m1"
	if le.ID() != "m1" {
		t.Errorf("ID with Identity set = %q", le.ID())
	}
}
