package scheduler

import (
	"math"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/component-helpers/scheduling/corev1/nodeaffinity"
)

// Reasons the cluster-wide rules give, worded like upstream's.
const (
	reasonPodAffinity         = "node(s) didn't match pod affinity rules"
	reasonPodAntiAffinity     = "node(s) didn't match pod anti-affinity rules"
	reasonExistingAntiAffinty = "node(s) didn't satisfy existing pods anti-affinity rules"
	reasonSpread              = "node(s) didn't match pod topology spread constraints"
	reasonSpreadLabel         = "node(s) didn't match pod topology spread constraints (missing required label)"
)

// hardPodAffinityWeight is what an existing pod's required affinity term
// that matches the incoming pod adds to the score (upstream's default).
const hardPodAffinityWeight = 1

// topoPair is one topology domain: a label key and its value.
type topoPair struct{ key, value string }

// affinityTerm is a pod (anti-)affinity term ready to match pods.
type affinityTerm struct {
	namespaces  sets.Set[string]
	nsSelector  labels.Selector // nil: only namespaces
	selector    labels.Selector
	topologyKey string
	weight      int64
}

func newAffinityTerm(owner *corev1.Pod, t *corev1.PodAffinityTerm, weight int32) (affinityTerm, bool) {
	sel, err := metav1.LabelSelectorAsSelector(t.LabelSelector)
	if err != nil || t.LabelSelector == nil {
		sel = labels.Nothing()
	}
	at := affinityTerm{namespaces: sets.New(t.Namespaces...), selector: sel, topologyKey: t.TopologyKey, weight: int64(weight)}
	if t.NamespaceSelector != nil {
		if at.nsSelector, err = metav1.LabelSelectorAsSelector(t.NamespaceSelector); err != nil {
			at.nsSelector = labels.Nothing()
		}
	} else if len(t.Namespaces) == 0 {
		at.namespaces.Insert(owner.Namespace)
	}
	return at, t.TopologyKey != ""
}

func termsOf(owner *corev1.Pod, terms []corev1.PodAffinityTerm) []affinityTerm {
	var out []affinityTerm
	for i := range terms {
		if t, ok := newAffinityTerm(owner, &terms[i], 1); ok {
			out = append(out, t)
		}
	}
	return out
}

func weightedTermsOf(owner *corev1.Pod, terms []corev1.WeightedPodAffinityTerm, sign int32) []affinityTerm {
	var out []affinityTerm
	for i := range terms {
		if t, ok := newAffinityTerm(owner, &terms[i].PodAffinityTerm, sign*terms[i].Weight); ok {
			out = append(out, t)
		}
	}
	return out
}

// podRules evaluates the rules that depend on pods across the cluster
// (pod affinity and anti-affinity, topology spread) for one pod against
// one snapshot: built once per cycle, then asked per node.
type podRules struct {
	s   *Scheduler
	pod *corev1.Pod

	affinity, anti []affinityTerm
	affinityCounts map[topoPair]int // pods matching all of pod's affinity terms, per domain
	antiCounts     map[topoPair]int // pods matching one of pod's anti-affinity terms
	existingAnti   map[topoPair]int // existing pods whose required anti-affinity matches pod
	firstOfGroup   bool             // nothing matches pod's affinity, but pod does itself

	preferred []affinityTerm // pod's preferred terms, anti ones with negative weights

	hard, soft []spreadConstraint
}

// spreadConstraint is a topology spread constraint with its counts.
type spreadConstraint struct {
	c        corev1.TopologySpreadConstraint
	selector labels.Selector
	counts   map[string]int // matching pods per domain value, over eligible nodes
	minMatch int
	self     int // 1 if the pod matches its own selector
}

func (r *podRules) any() bool {
	return len(r.affinity) > 0 || len(r.anti) > 0 || len(r.existingAnti) > 0 || len(r.hard) > 0
}

// nsLabels returns the labels of namespace ns (empty if unknown).
func (s *Scheduler) nsLabels(ns string) labels.Set {
	if n, err := s.nsLister.Get(ns); err == nil {
		return n.Labels
	}
	return nil
}

func (s *Scheduler) termMatches(t *affinityTerm, p *corev1.Pod) bool {
	if !t.selector.Matches(labels.Set(p.Labels)) {
		return false
	}
	if t.namespaces.Has(p.Namespace) {
		return true
	}
	return t.nsSelector != nil && t.nsSelector.Matches(s.nsLabels(p.Namespace))
}

// podRulesFor builds the rules for pod over the current snapshot.
func (s *Scheduler) podRulesFor(pod *corev1.Pod) *podRules {
	r := &podRules{s: s, pod: pod}
	if a := pod.Spec.Affinity; a != nil {
		if a.PodAffinity != nil {
			r.affinity = termsOf(pod, a.PodAffinity.RequiredDuringSchedulingIgnoredDuringExecution)
			r.preferred = append(r.preferred, weightedTermsOf(pod, a.PodAffinity.PreferredDuringSchedulingIgnoredDuringExecution, 1)...)
		}
		if a.PodAntiAffinity != nil {
			r.anti = termsOf(pod, a.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution)
			r.preferred = append(r.preferred, weightedTermsOf(pod, a.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution, -1)...)
		}
	}
	// Existing pods' required anti-affinity against this pod: only the
	// nodes that hold pods with terms.
	for _, ni := range s.snap.affinity {
		for _, pi := range ni.pods {
			a := pi.pod.Spec.Affinity
			if a == nil || a.PodAntiAffinity == nil {
				continue
			}
			for _, t := range termsOf(pi.pod, a.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution) {
				if v, ok := ni.node.Labels[t.topologyKey]; ok && s.termMatches(&t, pod) {
					if r.existingAnti == nil {
						r.existingAnti = map[topoPair]int{}
					}
					r.existingAnti[topoPair{t.topologyKey, v}]++
				}
			}
		}
	}
	if len(r.affinity) > 0 || len(r.anti) > 0 {
		r.affinityCounts, r.antiCounts = map[topoPair]int{}, map[topoPair]int{}
		for _, ni := range s.snap.list {
			for _, pi := range ni.pods {
				r.countExisting(ni, pi.pod)
			}
		}
		if len(r.affinity) > 0 && len(r.affinityCounts) == 0 {
			r.firstOfGroup = true
			for i := range r.affinity {
				if !s.termMatches(&r.affinity[i], pod) {
					r.firstOfGroup = false
				}
			}
		}
	}
	r.buildSpread()
	return r
}

func (r *podRules) countExisting(ni *nodeInfo, p *corev1.Pod) {
	if len(r.affinity) > 0 {
		all := true
		for i := range r.affinity {
			if !r.s.termMatches(&r.affinity[i], p) {
				all = false
				break
			}
		}
		if all {
			for _, t := range r.affinity {
				if v, ok := ni.node.Labels[t.topologyKey]; ok {
					r.affinityCounts[topoPair{t.topologyKey, v}]++
				}
			}
		}
	}
	for i := range r.anti {
		t := &r.anti[i]
		if v, ok := ni.node.Labels[t.topologyKey]; ok && r.s.termMatches(t, p) {
			r.antiCounts[topoPair{t.topologyKey, v}]++
		}
	}
}

// filter returns why the pod's cluster-wide rules keep it off ni's node,
// or "": in upstream's order, the pod's affinity, its anti-affinity, the
// existing pods' anti-affinity, then topology spread.
func (r *podRules) filter(ni *nodeInfo) string {
	nl := ni.node.Labels
	if len(r.affinity) > 0 && !r.firstOfGroup {
		for _, t := range r.affinity {
			v, ok := nl[t.topologyKey]
			if !ok || r.affinityCounts[topoPair{t.topologyKey, v}] == 0 {
				return reasonPodAffinity
			}
		}
	}
	for _, t := range r.anti {
		if v, ok := nl[t.topologyKey]; ok && r.antiCounts[topoPair{t.topologyKey, v}] > 0 {
			return reasonPodAntiAffinity
		}
	}
	for tp, n := range r.existingAnti {
		if n > 0 && nl[tp.key] == tp.value {
			if _, ok := nl[tp.key]; ok {
				return reasonExistingAntiAffinty
			}
		}
	}
	for i := range r.hard {
		c := &r.hard[i]
		v, ok := nl[c.c.TopologyKey]
		if !ok {
			return reasonSpreadLabel
		}
		if c.counts[v]+c.self-c.minMatch > int(c.c.MaxSkew) {
			return reasonSpread
		}
	}
	return ""
}

// buildSpread counts, for each of the pod's topology spread constraints,
// the matching pods in each domain over the nodes the constraint's
// policies let in (upstream's rules: nodes lacking a hard constraint's
// key are left out; nodeAffinityPolicy Honor (the default) counts only
// nodes the pod's node selector and affinity allow; nodeTaintsPolicy
// Honor counts only nodes whose taints it tolerates).
func (r *podRules) buildSpread() {
	pod := r.pod
	if len(pod.Spec.TopologySpreadConstraints) == 0 {
		return
	}
	var all []spreadConstraint
	for _, c := range pod.Spec.TopologySpreadConstraints {
		sel, err := metav1.LabelSelectorAsSelector(c.LabelSelector)
		if err != nil || c.LabelSelector == nil {
			sel = labels.Nothing()
		}
		for _, k := range c.MatchLabelKeys {
			if v, ok := pod.Labels[k]; ok {
				if req, err := labels.NewRequirement(k, "=", []string{v}); err == nil {
					sel = sel.Add(*req)
				}
			}
		}
		sc := spreadConstraint{c: c, selector: sel, counts: map[string]int{}}
		if sel.Matches(labels.Set(pod.Labels)) {
			sc.self = 1
		}
		all = append(all, sc)
	}
	required := nodeaffinity.GetRequiredNodeAffinity(pod)
	for _, ni := range r.s.snap.list {
		nl := ni.node.Labels
		missing := false
		for _, sc := range all {
			if _, ok := nl[sc.c.TopologyKey]; !ok && sc.c.WhenUnsatisfiable == corev1.DoNotSchedule {
				missing = true
			}
		}
		if missing {
			continue
		}
		for i := range all {
			sc := &all[i]
			v, ok := nl[sc.c.TopologyKey]
			if !ok {
				continue
			}
			if sc.c.NodeAffinityPolicy == nil || *sc.c.NodeAffinityPolicy == corev1.NodeInclusionPolicyHonor {
				if m, _ := required.Match(ni.node); !m {
					continue
				}
			}
			if sc.c.NodeTaintsPolicy != nil && *sc.c.NodeTaintsPolicy == corev1.NodeInclusionPolicyHonor {
				if _, bad := untoleratedTaint(pod.Spec.Tolerations, ni.node.Spec.Taints); bad {
					continue
				}
			}
			n := 0
			for _, pi := range ni.pods {
				p := pi.pod
				if p.Namespace == pod.Namespace && p.DeletionTimestamp == nil && sc.selector.Matches(labels.Set(p.Labels)) {
					n++
				}
			}
			sc.counts[v] += n
		}
	}
	for _, sc := range all {
		sc.minMatch = math.MaxInt
		for _, n := range sc.counts {
			sc.minMatch = min(sc.minMatch, n)
		}
		if sc.minMatch == math.MaxInt {
			sc.minMatch = 0
		}
		if sc.c.MinDomains != nil && len(sc.counts) < int(*sc.c.MinDomains) {
			sc.minMatch = 0
		}
		if sc.c.WhenUnsatisfiable == corev1.DoNotSchedule {
			r.hard = append(r.hard, sc)
		} else {
			r.soft = append(r.soft, sc)
		}
	}
}

// scores returns the weighted cluster-wide scores of the feasible nodes
// (preferred inter-pod affinity, soft topology spread), or nil when none
// applies.
func (r *podRules) scores(feasible []*nodeInfo) []int64 {
	var out []int64
	if raw := r.affinityScores(feasible); raw != nil {
		out = make([]int64, len(feasible))
		for i, v := range normalize(raw, false) {
			out[i] += weightPodAffinity * v
		}
	}
	if len(r.soft) > 0 {
		raw := make([]int64, len(feasible))
		for i, ni := range feasible {
			var sum float64
			for _, sc := range r.soft {
				if v, ok := ni.node.Labels[sc.c.TopologyKey]; ok {
					sum += float64(sc.counts[v]+int(sc.c.MaxSkew)-1) * math.Log(float64(len(sc.counts)+2))
				}
			}
			raw[i] = int64(sum * 100)
		}
		if out == nil {
			out = make([]int64, len(feasible))
		}
		for i, v := range normalize(raw, true) {
			out[i] += weightSpread * v
		}
	}
	return out
}

// affinityScores sums, per topology domain, the weights of the pod's
// preferred terms matched by existing pods and of the existing pods'
// terms (preferred, and required with hardPodAffinityWeight) matched by
// the pod; anti-affinity weights count negatively. nil when nothing
// applies.
func (r *podRules) affinityScores(feasible []*nodeInfo) []int64 {
	nodes := r.s.snap.affinity
	if len(r.preferred) > 0 {
		nodes = r.s.snap.list
	}
	domains := map[topoPair]int64{}
	add := func(ni *nodeInfo, t *affinityTerm, p *corev1.Pod) {
		if v, ok := ni.node.Labels[t.topologyKey]; ok && r.s.termMatches(t, p) {
			domains[topoPair{t.topologyKey, v}] += t.weight
		}
	}
	for _, ni := range nodes {
		for _, pi := range ni.pods {
			for i := range r.preferred {
				add(ni, &r.preferred[i], pi.pod)
			}
			a := pi.pod.Spec.Affinity
			if !pi.affinity || a == nil {
				continue
			}
			if a.PodAffinity != nil {
				for _, t := range weightedTermsOf(pi.pod, a.PodAffinity.PreferredDuringSchedulingIgnoredDuringExecution, 1) {
					add(ni, &t, r.pod)
				}
				for _, t := range termsOf(pi.pod, a.PodAffinity.RequiredDuringSchedulingIgnoredDuringExecution) {
					t.weight = hardPodAffinityWeight
					add(ni, &t, r.pod)
				}
			}
			if a.PodAntiAffinity != nil {
				for _, t := range weightedTermsOf(pi.pod, a.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution, -1) {
					add(ni, &t, r.pod)
				}
			}
		}
	}
	if len(domains) == 0 {
		return nil
	}
	raw := make([]int64, len(feasible))
	for i, ni := range feasible {
		for tp, w := range domains {
			if v, ok := ni.node.Labels[tp.key]; ok && v == tp.value {
				raw[i] += w
			}
		}
	}
	return raw
}
