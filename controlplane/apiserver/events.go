package apiserver

import (
	"context"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"kforge.dev/kforge/controlplane/apiserver/storage"
)

// Events are one resource in two versions, as upstream: the objects are
// stored as core v1 Events, and events.k8s.io/v1 reads and writes them
// converted with upstream's field mapping (k8s.io/kubernetes
// pkg/apis/events/v1 conversion): note is message, regarding is
// involvedObject, deprecatedSource/Count/FirstTimestamp/LastTimestamp are
// source, count, firstTimestamp and lastTimestamp; eventTime, series,
// related, action, reason, type, reportingController (core's
// reportingComponent) and reportingInstance carry over as they are.

// eventToCore converts an events.k8s.io/v1 Event into its stored form.
func eventToCore(obj runtime.Object) (runtime.Object, error) {
	e, ok := obj.(*eventsv1.Event)
	if !ok {
		return nil, fmt.Errorf("converting to a core Event: got %T", obj)
	}
	out := &corev1.Event{
		ObjectMeta:          *e.ObjectMeta.DeepCopy(),
		InvolvedObject:      e.Regarding,
		Reason:              e.Reason,
		Message:             e.Note,
		Source:              e.DeprecatedSource,
		FirstTimestamp:      e.DeprecatedFirstTimestamp,
		LastTimestamp:       e.DeprecatedLastTimestamp,
		Count:               e.DeprecatedCount,
		Type:                e.Type,
		EventTime:           e.EventTime,
		Action:              e.Action,
		ReportingController: e.ReportingController,
		ReportingInstance:   e.ReportingInstance,
	}
	if e.Series != nil {
		out.Series = &corev1.EventSeries{Count: e.Series.Count, LastObservedTime: e.Series.LastObservedTime}
	}
	if e.Related != nil {
		r := *e.Related
		out.Related = &r
	}
	out.APIVersion, out.Kind = "v1", "Event"
	return out, nil
}

// eventFromCore converts a stored core Event into events.k8s.io/v1.
func eventFromCore(obj runtime.Object) (runtime.Object, error) {
	e, ok := obj.(*corev1.Event)
	if !ok {
		return nil, fmt.Errorf("converting to an events.k8s.io Event: got %T", obj)
	}
	out := &eventsv1.Event{
		ObjectMeta:               *e.ObjectMeta.DeepCopy(),
		EventTime:                e.EventTime,
		ReportingController:      e.ReportingController,
		ReportingInstance:        e.ReportingInstance,
		Action:                   e.Action,
		Reason:                   e.Reason,
		Regarding:                e.InvolvedObject,
		Note:                     e.Message,
		Type:                     e.Type,
		DeprecatedSource:         e.Source,
		DeprecatedFirstTimestamp: e.FirstTimestamp,
		DeprecatedLastTimestamp:  e.LastTimestamp,
		DeprecatedCount:          e.Count,
	}
	if e.Series != nil {
		out.Series = &eventsv1.EventSeries{Count: e.Series.Count, LastObservedTime: e.Series.LastObservedTime}
	}
	if e.Related != nil {
		r := *e.Related
		out.Related = &r
	}
	out.APIVersion, out.Kind = eventsv1.SchemeGroupVersion.String(), "Event"
	return out, nil
}

// writeOptions are the storage options of a write of res: Events expire
// EventTTL after their last write, as upstream's --event-ttl.
func (s *Server) writeOptions(res *Resource) []storage.WriteOption {
	if res.TTL {
		return []storage.WriteOption{storage.WithTTL(s.cfg.EventTTL)}
	}
	return nil
}

// unservedEventsPrefix is where apiservers before Events were one
// resource stored events.k8s.io Events apart, without a TTL: nothing
// serves them now, and nothing would ever remove them.
const unservedEventsPrefix = "/registry/events.k8s.io/events/"

// dropUnservedEvents deletes what is left under unservedEventsPrefix, a
// page at a time. Events are best-effort history that would have expired
// by now had they been stored with a TTL.
func (s *Server) dropUnservedEvents(ctx context.Context) error {
	for {
		page, err := s.store.List(ctx, unservedEventsPrefix, storage.ListOptions{Limit: 1000})
		if err != nil {
			return fmt.Errorf("apiserver: listing old events.k8s.io Events: %w", err)
		}
		for _, kv := range page.Items {
			if _, err := s.store.Delete(ctx, kv.Key, kv.ModRevision); err != nil && !errors.Is(err, storage.ErrNotFound) && !errors.Is(err, storage.ErrConflict) {
				return fmt.Errorf("apiserver: deleting old events.k8s.io Event %s: %w", kv.Key, err)
			}
		}
		if page.Continue == "" {
			return nil
		}
	}
}
