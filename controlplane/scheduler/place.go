package scheduler

import (
	"math"
	"math/rand/v2"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/component-helpers/scheduling/corev1/nodeaffinity"
	"k8s.io/klog/v2"
)

// Upstream's percentageOfNodesToScore: on clusters of at least
// minFeasibleNodesToFind nodes the search stops once it has found
// (50 - nodes/125)% of them feasible, but never fewer than 5% or 100.
const (
	minFeasibleNodesToFind           = 100
	minFeasibleNodesPercentageToFind = 5
)

func numFeasibleNodesToFind(nodes int) int {
	if nodes < minFeasibleNodesToFind {
		return nodes
	}
	pct := max(50-nodes/125, minFeasibleNodesPercentageToFind)
	return max(nodes*pct/100, minFeasibleNodesToFind)
}

// fitResult is why no node fits: the reasons counted over the nodes, and
// whether pods elsewhere could change the answer (pod affinity, spread).
type fitResult struct {
	reasons  map[string]int
	podRules bool
}

// findNode filters the snapshot's nodes for pod, starting where the last
// cycle stopped and stopping once numFeasibleNodesToFind fit, then scores
// the feasible ones and returns the best ("" when none fits).
func (s *Scheduler) findNode(pod *corev1.Pod) (string, fitResult) {
	nodes := s.snap.list
	res := fitResult{reasons: map[string]int{}}
	if len(nodes) == 0 {
		return "", res
	}
	rules := s.podRulesFor(pod)
	res.podRules = rules.any()
	want := numFeasibleNodesToFind(len(nodes))
	feasible := make([]*nodeInfo, 0, want)
	start := s.nextStart % len(nodes)
	visited := 0
	for i := range nodes {
		ni := nodes[(start+i)%len(nodes)]
		visited++
		why := filter(pod, ni)
		if len(why) == 0 {
			if r := rules.filter(ni); r != "" {
				why = []string{r}
			}
		}
		if len(why) == 0 {
			feasible = append(feasible, ni)
			if len(feasible) >= want {
				break
			}
			continue
		}
		for _, r := range why {
			res.reasons[r]++
		}
	}
	s.nextStart = (start + visited) % len(nodes)
	if len(feasible) == 0 {
		return "", res
	}
	best := pickNodeWith(pod, feasible, rules.scores(feasible), -1)
	return best.node.Name, res
}

// pickNode scores the feasible nodes with the node-local scores only and
// returns the best; see pickNodeWith.
func pickNode(pod *corev1.Pod, feasible []*nodeInfo, start int) *nodeInfo {
	return pickNodeWith(pod, feasible, nil, start)
}

// pickNodeWith adds extra[i] (the cluster-wide scores, already weighted)
// to node i's own score and returns the best. Ties go to the tied node at
// position start (mod their number) in the order given, or, with start
// negative, to one of them at random (as upstream does).
func pickNodeWith(pod *corev1.Pod, feasible []*nodeInfo, extra []int64, start int) *nodeInfo {
	if len(feasible) == 0 {
		return nil
	}
	maxSiblings := 0
	if o := controllerOf(pod); o != "" {
		for _, ni := range feasible {
			maxSiblings = max(maxSiblings, ni.owners[o])
		}
	}
	prefs := preferredNodeScores(pod, feasible)
	var best []*nodeInfo
	bestScore := int64(math.MinInt64)
	for i, ni := range feasible {
		sc := score(pod, ni, maxSiblings)
		if extra != nil {
			sc += extra[i]
		}
		if prefs != nil {
			sc += prefs[i]
		}
		switch {
		case sc > bestScore:
			bestScore, best = sc, append(best[:0], ni)
		case sc == bestScore:
			best = append(best, ni)
		}
	}
	if start < 0 {
		return best[rand.IntN(len(best))]
	}
	return best[start%len(best)]
}

// Weights of the scores, upstream's defaults: node resources 1 each,
// preferred node affinity 2, inter-pod affinity 2, topology spread 2,
// PreferNoSchedule taints 3.
const (
	weightNodeAffinity = 2
	weightPodAffinity  = 2
	weightSpread       = 2
	weightTaints       = 3
)

// preferredNodeScores rates the preferred node affinity terms (weighted
// sum of matching terms, normalized to 0..maxScore) and the
// PreferNoSchedule taints the pod does not tolerate (fewer is better);
// nil when neither applies.
func preferredNodeScores(pod *corev1.Pod, feasible []*nodeInfo) []int64 {
	var terms *nodeaffinity.PreferredSchedulingTerms
	if a := pod.Spec.Affinity; a != nil && a.NodeAffinity != nil && len(a.NodeAffinity.PreferredDuringSchedulingIgnoredDuringExecution) > 0 {
		terms, _ = nodeaffinity.NewPreferredSchedulingTerms(a.NodeAffinity.PreferredDuringSchedulingIgnoredDuringExecution)
	}
	anyPrefer := false
	for _, ni := range feasible {
		for _, t := range ni.node.Spec.Taints {
			if t.Effect == corev1.TaintEffectPreferNoSchedule {
				anyPrefer = true
			}
		}
	}
	if terms == nil && !anyPrefer {
		return nil
	}
	out := make([]int64, len(feasible))
	if terms != nil {
		raw := make([]int64, len(feasible))
		for i, ni := range feasible {
			raw[i] = terms.Score(ni.node)
		}
		for i, v := range normalize(raw, false) {
			out[i] += weightNodeAffinity * v
		}
	}
	if anyPrefer {
		raw := make([]int64, len(feasible))
		for i, ni := range feasible {
			for _, t := range ni.node.Spec.Taints {
				if t.Effect != corev1.TaintEffectPreferNoSchedule {
					continue
				}
				tolerated := false
				for j := range pod.Spec.Tolerations {
					if pod.Spec.Tolerations[j].ToleratesTaint(klog.Background(), &t, false) {
						tolerated = true
						break
					}
				}
				if !tolerated {
					raw[i]++
				}
			}
		}
		for i, v := range normalize(raw, true) {
			out[i] += weightTaints * v
		}
	}
	return out
}

// normalize maps raw scores onto 0..maxScore by the largest (reverse:
// the smallest raw is best). All-equal scores give maxScore to all.
func normalize(raw []int64, reverse bool) []int64 {
	lo, hi := int64(math.MaxInt64), int64(math.MinInt64)
	for _, v := range raw {
		lo, hi = min(lo, v), max(hi, v)
	}
	out := make([]int64, len(raw))
	for i, v := range raw {
		switch {
		case hi == lo:
			out[i] = maxScore
		case reverse:
			out[i] = (hi - v) * maxScore / (hi - lo)
		default:
			out[i] = (v - lo) * maxScore / (hi - lo)
		}
	}
	return out
}
