package controllers

import (
	"context"
	"log/slog"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	batchinformers "k8s.io/client-go/informers/batch/v1"
	"k8s.io/client-go/kubernetes"
	batchlisters "k8s.io/client-go/listers/batch/v1"
	"k8s.io/client-go/tools/cache"
)

// TTLAfterFinishedController deletes each finished Job whose
// spec.ttlSecondsAfterFinished has passed since it finished, with
// foreground propagation so its pods go first, as upstream's
// ttl-after-finished controller.
type TTLAfterFinishedController struct {
	*loop
	client kubernetes.Interface
	jobs   batchlisters.JobLister
	now    func() time.Time
}

// NewTTLAfterFinishedController wires the controller to the Job informer.
func NewTTLAfterFinishedController(client kubernetes.Interface, jobInf batchinformers.JobInformer, log *slog.Logger, m *metrics) (*TTLAfterFinishedController, error) {
	c := &TTLAfterFinishedController{client: client, jobs: jobInf.Lister(), now: time.Now}
	c.loop = newLoop(NameTTLAfterFinished, log, m, c.sync, jobInf.Informer().HasSynced)
	if _, err := jobInf.Informer().AddEventHandler(c.handler()); err != nil {
		return nil, err
	}
	return c, nil
}

// expiry is when j may be deleted, if it has a TTL and has finished.
func expiry(j *batchv1.Job) (time.Time, bool) {
	if j.Spec.TTLSecondsAfterFinished == nil || j.DeletionTimestamp != nil {
		return time.Time{}, false
	}
	done, at := JobFinished(j)
	if !done {
		return time.Time{}, false
	}
	return at.Add(time.Duration(*j.Spec.TTLSecondsAfterFinished) * time.Second), true
}

func (c *TTLAfterFinishedController) sync(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	j, err := c.jobs.Jobs(ns).Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	at, ok := expiry(j)
	if !ok {
		return nil
	}
	if now := c.now(); now.Before(at) {
		c.queue.AddAfter(key, at.Sub(now))
		return nil
	}
	// The cache may be behind a TTL the user just raised: decide on the
	// stored Job.
	fresh, err := c.client.BatchV1().Jobs(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if at, ok = expiry(fresh); !ok {
		return nil
	}
	if now := c.now(); now.Before(at) {
		c.queue.AddAfter(key, at.Sub(now))
		return nil
	}
	fg := metav1.DeletePropagationForeground
	err = c.client.BatchV1().Jobs(ns).Delete(ctx, name, metav1.DeleteOptions{PropagationPolicy: &fg,
		Preconditions: &metav1.Preconditions{UID: &fresh.UID, ResourceVersion: &fresh.ResourceVersion}})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}
