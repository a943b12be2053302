package apiserver

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/strategicpatch"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"

	"kforge.dev/kforge/controlplane/apiserver/storage"
)

// toScale is the autoscaling/v1 Scale view of a deployment or replica set.
func toScale(res *Resource, obj runtime.Object) (runtime.Object, error) {
	if res.Custom != nil {
		return res.Custom.toScale(obj)
	}
	var replicas, statusReplicas int32
	var sel *metav1.LabelSelector
	switch o := obj.(type) {
	case *appsv1.Deployment:
		replicas, statusReplicas, sel = deref(o.Spec.Replicas), o.Status.Replicas, o.Spec.Selector
	case *appsv1.ReplicaSet:
		replicas, statusReplicas, sel = deref(o.Spec.Replicas), o.Status.Replicas, o.Spec.Selector
	case *appsv1.StatefulSet:
		replicas, statusReplicas, sel = deref(o.Spec.Replicas), o.Status.Replicas, o.Spec.Selector
	default:
		return nil, apierrors.NewNotFound(groupResource(res), "scale")
	}
	m, _ := meta.Accessor(obj)
	selector := ""
	if s, err := metav1.LabelSelectorAsSelector(sel); err == nil && sel != nil {
		selector = s.String()
	}
	return &autoscalingv1.Scale{
		TypeMeta: metav1.TypeMeta{Kind: "Scale", APIVersion: "autoscaling/v1"},
		ObjectMeta: metav1.ObjectMeta{Name: m.GetName(), Namespace: m.GetNamespace(), UID: m.GetUID(),
			ResourceVersion: m.GetResourceVersion(), CreationTimestamp: m.GetCreationTimestamp()},
		Spec:   autoscalingv1.ScaleSpec{Replicas: replicas},
		Status: autoscalingv1.ScaleStatus{Replicas: statusReplicas, Selector: selector},
	}, nil
}

func deref(p *int32) int32 {
	if p == nil {
		return 0
	}
	return *p
}

// updateScale handles PUT and PATCH of /scale: only spec.replicas of the
// parent changes.
func (s *Server) updateScale(ctx context.Context, req *request, r *http.Request, body []byte) (runtime.Object, []string, error) {
	var warnings []string
	var rv string
	out, err := s.guaranteedUpdate(ctx, req.res, req.ns, req.name, "", func(old runtime.Object) (runtime.Object, error) {
		orig := old.DeepCopyObject()
		cur, err := toScale(req.res, old)
		if err != nil {
			return nil, err
		}
		scale := &autoscalingv1.Scale{}
		if req.verb == "update" {
			warnings, err = decodeBody(r, body, scaleGVK, scale)
			if err != nil {
				return nil, err
			}
			rv = scale.ResourceVersion
			if rv != "" && rv != cur.(*autoscalingv1.Scale).ResourceVersion {
				return nil, storageError(storage.ErrConflict, groupResource(req.res), req.name)
			}
		} else {
			curJSON, _ := json.Marshal(cur)
			var patched []byte
			switch types.PatchType(mediaType(r)) {
			case types.JSONPatchType:
				p, err := decodeJSONPatch(body)
				if err != nil {
					return nil, err
				}
				if patched, err = applyJSONPatch(p, curJSON); err != nil {
					return nil, err
				}
			case types.MergePatchType:
				if patched, err = jsonpatch.MergePatch(curJSON, body); err != nil {
					return nil, apierrors.NewBadRequest("merge patch: " + err.Error())
				}
			case types.StrategicMergePatchType:
				if patched, err = strategicpatch.StrategicMergePatch(curJSON, body, scale); err != nil {
					return nil, apierrors.NewBadRequest("strategic merge patch: " + err.Error())
				}
			default:
				return nil, apierrors.NewGenericServerResponse(http.StatusUnsupportedMediaType, "PATCH", groupResource(req.res), req.name, fmt.Sprintf("the patch content type %q is not supported", mediaType(r)), 0, false)
			}
			if err := json.Unmarshal(patched, scale); err != nil {
				return nil, apierrors.NewBadRequest(err.Error())
			}
		}
		if scale.Spec.Replicas < 0 {
			return nil, apierrors.NewBadRequest("spec.replicas: must be greater than or equal to 0")
		}
		n := scale.Spec.Replicas
		if req.res.Custom != nil {
			if err := req.res.Custom.setReplicas(old, n); err != nil {
				return nil, err
			}
		}
		switch o := old.(type) {
		case *appsv1.Deployment:
			o.Spec.Replicas = &n
		case *appsv1.ReplicaSet:
			o.Spec.Replicas = &n
		case *appsv1.StatefulSet:
			o.Spec.Replicas = &n
		}
		return s.mergeUpdate(&request{res: req.res, ns: req.ns, name: req.name}, orig, old)
	})
	if err != nil {
		return nil, warnings, err
	}
	sc, err := toScale(req.res, out)
	return sc, warnings, err
}

func mediaType(r *http.Request) string {
	ct := r.Header.Get("Content-Type")
	for i, c := range ct {
		if c == ';' {
			return ct[:i]
		}
	}
	return ct
}

// bindingKey marks the context of a binding's update: the one update
// that may set a pod's spec.nodeName.
type bindingKey struct{}

// validationBase is the old object an update is validated against: for a
// binding, the old pod with the node it is being bound to, so that the
// rest of the spec is still held immutable.
func validationBase(ctx context.Context, obj, old runtime.Object) runtime.Object {
	p, ok := old.(*corev1.Pod)
	np, nok := obj.(*corev1.Pod)
	if !ok || !nok || ctx.Value(bindingKey{}) == nil || p.Spec.NodeName != "" {
		return old
	}
	c := p.DeepCopy()
	c.Spec.NodeName = np.Spec.NodeName
	return c
}

// bind handles POST pods/NAME/binding: it sets spec.nodeName once and
// marks the pod scheduled.
func (s *Server) bind(ctx context.Context, req *request, r *http.Request, body []byte) (runtime.Object, error) {
	b := &corev1.Binding{}
	if _, err := decodeBody(r, body, corev1.SchemeGroupVersion.WithKind("Binding"), b); err != nil {
		return nil, err
	}
	if b.Name != "" && b.Name != req.name {
		return nil, apierrors.NewBadRequest("the name of the binding does not match the pod")
	}
	if b.Target.Name == "" {
		return nil, apierrors.NewBadRequest("target.name: a node name is required")
	}
	return s.guaranteedUpdate(context.WithValue(ctx, bindingKey{}, true), req.res, req.ns, req.name, "", func(old runtime.Object) (runtime.Object, error) {
		p := old.(*corev1.Pod)
		if p.DeletionTimestamp != nil {
			return nil, apierrors.NewConflict(groupResource(req.res), req.name, fmt.Errorf("pod %s is being deleted, cannot be assigned to a host", req.name))
		}
		if p.Spec.NodeName != "" {
			return nil, apierrors.NewConflict(groupResource(req.res), req.name, fmt.Errorf("pod %s is already assigned to node %q", req.name, p.Spec.NodeName))
		}
		if b.UID != "" && b.UID != p.UID {
			return nil, apierrors.NewConflict(groupResource(req.res), req.name, fmt.Errorf("the UID in the binding does not match the pod"))
		}
		p.Spec.NodeName = b.Target.Name
		setPodCondition(&p.Status, corev1.PodCondition{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: metav1.Now()})
		return p, nil
	})
}

func setPodCondition(st *corev1.PodStatus, c corev1.PodCondition) {
	for i := range st.Conditions {
		if st.Conditions[i].Type == c.Type {
			st.Conditions[i] = c
			return
		}
	}
	st.Conditions = append(st.Conditions, c)
}
