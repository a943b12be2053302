package apiserver

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"

	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	crdvalidation "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/validation"
	crdapply "k8s.io/apiextensions-apiserver/pkg/client/applyconfiguration"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/managedfields"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"kforge.dev/kforge/controlplane/apiserver/storage"
)

// crdCleanupFinalizer holds a deleted CustomResourceDefinition until its
// objects are gone, as upstream's.
const crdCleanupFinalizer = "customresourcecleanup.apiextensions.k8s.io"

// crdScheme knows the apiextensions types, external and internal: the
// conversion to the internal form is what upstream's CRD validation reads.
var crdScheme = newCRDScheme()

func newCRDScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	if err := apiextensionsv1.AddToScheme(s); err != nil {
		panic(err) // the generated registrations of a vendored module
	}
	if err := apiextensions.AddToScheme(s); err != nil {
		panic(err)
	}
	return s
}

// crdTypeConverter is server-side apply's schema of the apiextensions
// types, from the module's generated apply configurations.
var crdTypeConverter = sync.OnceValue(func() managedfields.TypeConverter { return crdapply.NewTypeConverter(crdScheme) })

// crdResource is the apiextensions.k8s.io/v1 CustomResourceDefinition row
// of the table. Its objects are typed; creating, changing or deleting one
// changes the rows of its custom resources (crdWatcher).
func (s *Server) crdResource() *Resource {
	return &Resource{Group: apiextensionsv1.GroupName, Version: "v1", Kind: "CustomResourceDefinition", Plural: "customresourcedefinitions",
		ShortNames: []string{"crd", "crds"}, Categories: []string{"api-extensions"}, Subresources: []string{"status"},
		New: newOf[apiextensionsv1.CustomResourceDefinition](), NewList: newOf[apiextensionsv1.CustomResourceDefinitionList](),
		Prepare: s.prepareCRD, Validate: validateCRD}
}

// prepareCRD is upstream's strategy and its naming and establishing
// controllers in one step: defaults, the stored versions, the cleanup
// finalizer on create, and the accepted names with the NamesAccepted and
// Established conditions (False with the reason when the names collide
// with a served resource).
func (s *Server) prepareCRD(obj, old runtime.Object) {
	crd := obj.(*apiextensionsv1.CustomResourceDefinition)
	crdScheme.Default(crd)
	if old == nil {
		crd.Status = apiextensionsv1.CustomResourceDefinitionStatus{}
		if !slices.Contains(crd.Finalizers, crdCleanupFinalizer) {
			crd.Finalizers = append(crd.Finalizers, crdCleanupFinalizer)
		}
	}
	for _, v := range crd.Spec.Versions {
		if v.Storage && !slices.Contains(crd.Status.StoredVersions, v.Name) {
			crd.Status.StoredVersions = append(crd.Status.StoredVersions, v.Name)
		}
	}
	names := crd.Spec.Names
	if names.Singular == "" {
		names.Singular = strings.ToLower(names.Kind)
	}
	if names.ListKind == "" && names.Kind != "" {
		names.ListKind = names.Kind + "List"
	}
	accepted, established := metav1.ConditionTrue, metav1.ConditionTrue
	reason, msg := "NoConflicts", "no conflicts found"
	estReason, estMsg := "InitialNamesAccepted", "the initial names have been accepted"
	if conflict := s.crdNameConflict(crd); conflict != "" {
		accepted, established = metav1.ConditionFalse, metav1.ConditionFalse
		reason, msg = "NameConflict", conflict
		estReason, estMsg = "NotAccepted", "not all names are accepted"
	} else {
		crd.Status.AcceptedNames = names
	}
	setCRDCondition(crd, apiextensionsv1.NamesAccepted, accepted, reason, msg)
	setCRDCondition(crd, apiextensionsv1.Established, established, estReason, estMsg)
}

func setCRDCondition(crd *apiextensionsv1.CustomResourceDefinition, t apiextensionsv1.CustomResourceDefinitionConditionType, st metav1.ConditionStatus, reason, msg string) {
	c := apiextensionsv1.CustomResourceDefinitionCondition{Type: apiextensionsv1.CustomResourceDefinitionConditionType(t),
		Status: apiextensionsv1.ConditionStatus(st), Reason: reason, Message: msg, LastTransitionTime: metav1.Now()}
	for i := range crd.Status.Conditions {
		if crd.Status.Conditions[i].Type == c.Type {
			if crd.Status.Conditions[i].Status == c.Status {
				c.LastTransitionTime = crd.Status.Conditions[i].LastTransitionTime
			}
			crd.Status.Conditions[i] = c
			return
		}
	}
	crd.Status.Conditions = append(crd.Status.Conditions, c)
}

// crdEstablished reports the Established condition.
func crdEstablished(crd *apiextensionsv1.CustomResourceDefinition) bool {
	for _, c := range crd.Status.Conditions {
		if c.Type == apiextensionsv1.Established {
			return c.Status == apiextensionsv1.ConditionTrue
		}
	}
	return false
}

// crdNameConflict names what another served resource of the group
// already uses of the definition's plural, kind or short names, or is
// empty.
func (s *Server) crdNameConflict(crd *apiextensionsv1.CustomResourceDefinition) string {
	n := crd.Spec.Names
	for _, r := range s.reg.all() {
		if r.Group != crd.Spec.Group || (r.Custom != nil && r.Custom.crdName == crd.Name) {
			continue
		}
		switch {
		case r.Plural == n.Plural:
			return fmt.Sprintf("%q is already in use", n.Plural)
		case r.Kind == n.Kind:
			return fmt.Sprintf("%q is already in use", n.Kind)
		}
		for _, sn := range n.ShortNames {
			if slices.Contains(r.ShortNames, sn) {
				return fmt.Sprintf("%q is already in use", sn)
			}
		}
	}
	return ""
}

// validateCRD is upstream's validation of the definition (names, versions
// with exactly one storage version, structural schemas, defaults that
// match their schema, printer columns, subresources), run on its internal
// form. Object metadata is checked by the common rules, so only the rule
// tying the name to spec.names.plural and spec.group is kept from its
// metadata checks.
func validateCRD(obj, old runtime.Object) field.ErrorList {
	in := &apiextensions.CustomResourceDefinition{}
	if err := crdScheme.Convert(obj, in, nil); err != nil {
		return field.ErrorList{field.InternalError(nil, err)}
	}
	ctx := context.Background()
	var errs field.ErrorList
	if old == nil {
		errs = crdvalidation.ValidateCustomResourceDefinition(ctx, in)
	} else {
		prev := &apiextensions.CustomResourceDefinition{}
		if err := crdScheme.Convert(old, prev, nil); err != nil {
			return field.ErrorList{field.InternalError(nil, err)}
		}
		errs = crdvalidation.ValidateCustomResourceDefinitionUpdate(ctx, in, prev)
	}
	out := errs[:0]
	for _, e := range errs {
		if strings.HasPrefix(e.Field, "metadata") && !strings.Contains(e.Detail, "spec.names.plural") {
			continue
		}
		out = append(out, e)
	}
	return out
}

// crdWatcher keeps the registry's custom resource rows in step with the
// stored CustomResourceDefinitions (storage.Follow drives it, on every
// apiserver), and removes the objects of a deleted definition before
// releasing its finalizer.
type crdWatcher struct {
	s *Server

	mu      sync.Mutex
	served  map[string]string // CRD name → "group/plural" it serves
	rev     map[string]int64  // CRD name → the revision served
	cleanup map[string]bool   // deleted CRDs whose objects are to go
	wake    chan struct{}
}

func newCRDWatcher(s *Server) *crdWatcher {
	return &crdWatcher{s: s, served: map[string]string{}, rev: map[string]int64{}, cleanup: map[string]bool{}, wake: make(chan struct{}, 1)}
}

func (s *Server) crdRes() *Resource {
	return s.reg.Lookup(apiextensionsv1.GroupName, "v1", "customresourcedefinitions")
}

// Replace implements storage.Mirror.
func (c *crdWatcher) Replace(items []storage.KV, rev int64) {
	seen := map[string]bool{}
	for _, kv := range items {
		if crd := c.decode(kv); crd != nil {
			seen[crd.Name] = true
			c.sync(crd)
		}
	}
	c.mu.Lock()
	var gone []string
	for name := range c.served {
		if !seen[name] {
			gone = append(gone, name)
		}
	}
	c.mu.Unlock()
	for _, name := range gone {
		c.remove(name, rev)
	}
}

// Apply implements storage.Mirror.
func (c *crdWatcher) Apply(ev storage.Event) {
	if ev.Type == storage.Deleted {
		name := ev.KV.Key[strings.LastIndex(ev.KV.Key, "/")+1:]
		c.remove(name, ev.KV.ModRevision)
		return
	}
	if crd := c.decode(ev.KV); crd != nil {
		c.sync(crd)
	}
}

func (c *crdWatcher) decode(kv storage.KV) *apiextensionsv1.CustomResourceDefinition {
	obj, err := decodeStored(c.s.crdRes(), kv)
	if err != nil {
		c.s.log.Warn("custom resource definitions: undecodable", "key", kv.Key, "err", err)
		return nil
	}
	return obj.(*apiextensionsv1.CustomResourceDefinition)
}

// sync serves what crd defines: its served versions once Established.
// It holds the lock throughout, so copies of one definition applied
// from the watch and from a request never interleave.
func (c *crdWatcher) sync(crd *apiextensionsv1.CustomResourceDefinition) {
	c.mu.Lock()
	defer c.mu.Unlock()
	rev, _ := strconv.ParseInt(crd.ResourceVersion, 10, 64)
	if rev < c.rev[crd.Name] {
		return // an older copy than the one served
	}
	c.rev[crd.Name] = rev
	var rows []*Resource
	if crdEstablished(crd) {
		var err error
		if rows, err = customResourceRows(crd); err != nil {
			c.s.log.Warn("custom resource definitions: not served", "name", crd.Name, "err", err)
			rows = nil
		}
	}
	c.s.reg.replaceCustom(crd.Spec.Group, crd.Spec.Names.Plural, rows)
	c.served[crd.Name] = crd.Spec.Group + "/" + crd.Spec.Names.Plural
	if crd.DeletionTimestamp != nil && slices.Contains(crd.Finalizers, crdCleanupFinalizer) {
		c.cleanup[crd.Name] = true
		select {
		case c.wake <- struct{}{}:
		default:
		}
	}
}

// remove stops serving a definition deleted at revision rev. The
// revision stays as a tombstone: a copy older than the deletion (a
// request's, applied late) cannot bring the resources back, while a
// definition created again under the name is newer and is served.
func (c *crdWatcher) remove(name string, rev int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if gp, ok := c.served[name]; ok {
		group, plural, _ := strings.Cut(gp, "/")
		c.s.reg.replaceCustom(group, plural, nil)
	}
	delete(c.served, name)
	c.rev[name] = max(c.rev[name]+1, rev)
}

// run removes the objects of deleted definitions, then their finalizer,
// until ctx ends. Every apiserver runs it: the deletes and the finalizer's
// removal are idempotent.
func (c *crdWatcher) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.wake:
		}
		c.mu.Lock()
		var names []string
		for n := range c.cleanup {
			names = append(names, n)
		}
		clear(c.cleanup)
		c.mu.Unlock()
		for _, n := range names {
			if err := c.s.finalizeCRD(ctx, n); err != nil && ctx.Err() == nil {
				c.s.log.Warn("custom resource definitions: cleanup", "name", n, "err", err)
			}
		}
	}
}

// finalizeCRD deletes every object stored for a terminating definition,
// then drops the cleanup finalizer (which deletes the definition when it
// was the last).
func (s *Server) finalizeCRD(ctx context.Context, name string) error {
	crdRes := s.crdRes()
	obj, err := s.get(ctx, crdRes, "", name)
	if apierrors.IsNotFound(err) {
		return nil
	} else if err != nil {
		return err
	}
	crd := obj.(*apiextensionsv1.CustomResourceDefinition)
	if crd.DeletionTimestamp == nil || !slices.Contains(crd.Finalizers, crdCleanupFinalizer) {
		return nil
	}
	prefix := "/registry/" + crd.Spec.Group + "/" + crd.Spec.Names.Plural + "/"
	for {
		list, err := s.store.List(ctx, prefix, storage.ListOptions{Limit: 500})
		if err != nil {
			return err
		}
		for _, kv := range list.Items {
			if _, err := s.store.Delete(ctx, kv.Key, kv.ModRevision); err != nil && !errors.Is(err, storage.ErrNotFound) && !errors.Is(err, storage.ErrConflict) {
				return err
			}
		}
		if len(list.Items) == 0 {
			break
		}
	}
	wctx := context.WithValue(ctx, writeInfoKey{}, writeInfo{manager: "kforge-apiserver"})
	_, err = s.guaranteedUpdate(wctx, crdRes, "", name, "", func(old runtime.Object) (runtime.Object, error) {
		m, _ := meta.Accessor(old)
		m.SetFinalizers(slices.DeleteFunc(m.GetFinalizers(), func(f string) bool { return f == crdCleanupFinalizer }))
		return old, nil
	})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}
