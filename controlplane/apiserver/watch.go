package apiserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"

	"kforge.dev/kforge/controlplane/apiserver/storage"
)

// watchEvent is one line of a watch stream.
type watchEvent struct {
	Type   watch.EventType `json:"type"`
	Object any             `json:"object"`
}

// OpenWatches is the number of watches being served.
func (s *Server) OpenWatches() int {
	s.openW.Lock()
	defer s.openW.Unlock()
	return s.nWatch
}

func (s *Server) trackWatch(delta int) {
	s.openW.Lock()
	s.nWatch += delta
	s.openW.Unlock()
}

// serveWatch streams events, one JSON object per line, flushed per event.
//
// Start points follow upstream: resourceVersion "" or "0" (without
// sendInitialEvents=false) first sends the current objects as ADDED;
// sendInitialEvents=true does the same and then a BOOKMARK annotated
// k8s.io/initial-events-end (client-go's WatchList); any other
// resourceVersion streams changes after it, or answers 410 Expired when it
// has been compacted.
func (s *Server) serveWatch(w http.ResponseWriter, r *http.Request, req *request) {
	q := r.URL.Query()
	ls, fs, err := selectors(r)
	if err == nil {
		err = checkFieldSelector(req.res, fs)
	}
	if err != nil {
		writeError(w, err)
		return
	}
	rvParam := q.Get("resourceVersion")
	var sendInitial *bool
	if v := q.Get("sendInitialEvents"); v != "" {
		b := v == "true"
		sendInitial = &b
	}
	bookmarks := q.Get("allowWatchBookmarks") == "true"
	if sendInitial != nil && *sendInitial {
		if q.Get("resourceVersionMatch") != string(metav1.ResourceVersionMatchNotOlderThan) || !bookmarks {
			writeError(w, apierrors.NewBadRequest("sendInitialEvents=true requires resourceVersionMatch=NotOlderThan and allowWatchBookmarks=true"))
			return
		}
	}
	initial := (sendInitial != nil && *sendInitial) || (sendInitial == nil && (rvParam == "" || rvParam == "0"))

	timeout := time.Duration(1800+rand.IntN(1800)) * time.Second
	if v := q.Get("timeoutSeconds"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			writeError(w, apierrors.NewBadRequest("timeoutSeconds: not a non-negative integer"))
			return
		}
		if n > 0 {
			timeout = time.Duration(n) * time.Second
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	if serving := s.serving.Load(); serving != nil {
		// A watch ends when the server stops serving; the client
		// re-watches, through the load balancer, elsewhere.
		stop := context.AfterFunc(*serving, cancel)
		defer stop()
	}
	defer cancel()

	var startRev int64
	var snapshot []runtime.Object
	prefix := req.res.KeyPrefix(req.ns)
	if initial {
		lr, err := s.store.List(ctx, prefix, storage.ListOptions{})
		if err != nil {
			writeError(w, storageError(err, groupResource(req.res), ""))
			return
		}
		startRev = lr.Revision
		for _, kv := range lr.Items {
			obj, err := decodeStored(req.res, kv)
			if err != nil {
				writeError(w, apierrors.NewInternalError(err))
				return
			}
			if matches(req.res, obj, ls, fs) {
				snapshot = append(snapshot, obj)
			}
		}
	} else if rvParam != "" {
		startRev, err = strconv.ParseInt(rvParam, 10, 64)
		if err != nil || startRev < 0 {
			writeError(w, apierrors.NewBadRequest("resourceVersion: not a valid revision: "+rvParam))
			return
		}
		// A compacted start point is a 410 before the stream begins.
		if _, err := s.store.List(ctx, prefix, storage.ListOptions{Revision: startRev, Limit: 1}); err != nil {
			if errors.Is(err, storage.ErrExpired) {
				writeError(w, apierrors.NewResourceExpired(fmt.Sprintf("too old resource version: %d", startRev)))
				return
			}
			// A revision in the future is served from now on.
		}
	} else {
		if startRev, err = s.store.Revision(ctx); err != nil {
			writeError(w, storageError(err, groupResource(req.res), ""))
			return
		}
	}
	// The object cache serves the watch when its history reaches back to
	// startRev (nearly always); etcd does otherwise.
	events, errc, err := s.cache.Watch(ctx, prefix, startRev)
	if err != nil {
		events, errc = s.store.Watch(ctx, prefix, startRev)
	}

	s.watches.Add(1)
	s.trackWatch(1)
	defer func() {
		cancel()
		for range events {
		}
		s.trackWatch(-1)
		s.watches.Done()
	}()

	flusher, _ := w.(http.Flusher)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Transfer-Encoding", "chunked")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	send := func(t watch.EventType, obj any) bool {
		if err := enc.Encode(watchEvent{Type: t, Object: obj}); err != nil {
			return false
		}
		if flusher != nil {
			flusher.Flush()
		}
		return true
	}
	gvk := req.res.GroupVersion().WithKind(req.res.Kind)
	if wantsTable(r) {
		// kubectl get --watch: each event carries a one-row Table, the
		// column definitions only in the first.
		plain, first := send, true
		include := q.Get("includeObject")
		send = func(t watch.EventType, obj any) bool {
			if o, ok := obj.(runtime.Object); ok && t != watch.Error && t != watch.Bookmark {
				// A copy: the event's object may be shared (translate).
				obj = toTable(req.res, []runtime.Object{o.DeepCopyObject()}, include, first, metav1.ListMeta{})
				first = false
			}
			return plain(t, obj)
		}
	}
	bookmark := func(rev int64, initialEnd bool) bool {
		obj := req.res.New()
		obj.GetObjectKind().SetGroupVersionKind(gvk)
		m, _ := meta.Accessor(obj)
		m.SetResourceVersion(strconv.FormatInt(rev, 10))
		if initialEnd {
			m.SetAnnotations(map[string]string{metav1.InitialEventsAnnotationKey: "true"})
		}
		return send(watch.Bookmark, obj)
	}

	for _, obj := range snapshot {
		if !send(watch.Added, obj) {
			return
		}
	}
	if sendInitial != nil && *sendInitial {
		if !bookmark(startRev, true) {
			return
		}
	} else if flusher != nil {
		flusher.Flush()
	}

	lastRev := startRev
	tick := time.NewTicker(s.cfg.BookmarkInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if bookmarks && !bookmark(lastRev, false) {
				return
			}
		case ev, ok := <-events:
			if !ok {
				if err := <-errc; err != nil && ctx.Err() == nil {
					st := storageError(err, groupResource(req.res), "").(apierrors.APIStatus).Status()
					st.Kind, st.APIVersion = "Status", "v1"
					send(watch.Error, &st)
				}
				return
			}
			if ev.Type == storage.Progress {
				// Nothing changed here up to that revision: the next
				// bookmark may say so, and a client resuming from it
				// will not find its revision compacted.
				lastRev = max(lastRev, ev.KV.ModRevision)
				continue
			}
			t, obj, err := s.translate(req.res, ev, ls, fs)
			if err != nil {
				s.log.Warn("watch: undecodable object", "key", ev.KV.Key, "err", err)
				continue
			}
			lastRev = ev.KV.ModRevision
			if obj == nil {
				continue
			}
			if !send(t, obj) {
				return
			}
		}
	}
}

// translate turns a storage event into a watch event for a filtered watch:
// an object entering the filter is ADDED, leaving it DELETED. The object
// returned may be shared with other watches of the same event: read only.
func (s *Server) translate(res *Resource, ev storage.Event, ls labels.Selector, fs fields.Selector) (watch.EventType, runtime.Object, error) {
	d := decodeEvent(res, ev)
	if d.err != nil {
		return "", nil, d.err
	}
	cur, prev := d.cur, d.prev
	curMatch := cur != nil && matches(res, cur, ls, fs)
	prevMatch := prev != nil && matches(res, prev, ls, fs)
	switch {
	case ev.Type == storage.Deleted:
		if !prevMatch {
			return "", nil, nil
		}
		prev = prev.DeepCopyObject()
		m, _ := meta.Accessor(prev)
		m.SetResourceVersion(strconv.FormatInt(ev.KV.ModRevision, 10))
		return watch.Deleted, prev, nil
	case curMatch && prevMatch:
		return watch.Modified, cur, nil
	case curMatch:
		return watch.Added, cur, nil
	case prevMatch:
		// Left the filter: DELETED, carrying the new state.
		return watch.Deleted, cur, nil
	}
	return "", nil, nil
}

// decodedEvent is an event's objects, as res.
type decodedEvent struct {
	cur, prev runtime.Object
	err       error
}

// decodeEvent decodes ev's new and previous objects, once per resource
// for all the watches a cache event goes to (storage.Shared).
func decodeEvent(res *Resource, ev storage.Event) decodedEvent {
	decode := func() any {
		var d decodedEvent
		if ev.Type == storage.Put {
			if d.cur, d.err = decodeStored(res, ev.KV); d.err != nil {
				return d
			}
		}
		if ev.Prev.Key != "" {
			d.prev, d.err = decodeStored(res, ev.Prev)
		}
		return d
	}
	if ev.Shared == nil {
		return decode().(decodedEvent)
	}
	return ev.Shared.Do(res, decode).(decodedEvent)
}
