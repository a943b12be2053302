// Package scheduler is the kforge scheduler (`kforge scheduler --config
// FILE` on each master, and in-process in `kforge local up`). It places
// the pods whose spec.schedulerName is its name (default-scheduler) on
// nodes. It owns:
//
//   - Config: the role config (/etc/kforge/scheduler.yaml, kind
//     SchedulerConfig) in the shape of etcd's embed.Config: NewConfig
//     fills defaults, LoadConfig decodes a file strictly over them,
//     Validate lists every problem before anything starts.
//   - Scheduler: New (or NewWithRESTConfig), Run(ctx), Ready, Handler.
//     Informers on pods (all of them: the pods bound to a node are what
//     the node uses), nodes and namespaces (for namespaceSelector).
//   - schedCache (cache.go): every node with the pods on it and their
//     totals (nodeInfo, nodeinfo.go), changed incrementally by informer
//     events and by the scheduler's own placements, which it assumes
//     before the bind and forgets when the bind fails (or 30 s after a
//     bind the informer never shows). Each scheduling cycle updates a
//     snapshot that clones only the nodes that changed since the last.
//   - schedulingQueue (queue.go): upstream's priority queue: active
//     (higher spec.priority first, then the earlier queued), backoff (1 s
//     doubling to 10 s per attempt) and unschedulable; node adds and
//     changes that matter, bound pods going away and failed binds move
//     the unschedulable pods back; a bound pod moves those that failed on
//     pod affinity or spread; a pod updated while in flight is retried at
//     once; a pod unschedulable for 5 minutes is retried anyway.
//   - The cycle (cycle.go, place.go): one loop pops a pod, updates the
//     snapshot, filters nodes from where the last cycle stopped until
//     upstream's adaptive share of them is feasible (all below 100 nodes;
//     otherwise 50 - nodes/125 percent, at least 5 % and 100 nodes),
//     scores those, assumes the pod on the best (ties at random) and hands
//     the bind and the events to a goroutine (64 at most).
//   - Filters, in order, stopping at the first that fails: Ready; not
//     cordoned (unless tolerated); nodeSelector and required node affinity
//     (component-helpers' nodeaffinity); NoSchedule/NoExecute taints
//     (component-helpers); host ports; requests (component-helpers'
//     PodRequests) against allocatable cpu, memory and pods; then the
//     cluster-wide rules (podrules.go): required pod affinity, pod
//     anti-affinity, existing pods' anti-affinity (topologyKey,
//     namespaces, namespaceSelector), and DoNotSchedule topology spread
//     constraints (maxSkew, minDomains, matchLabelKeys, nodeAffinityPolicy,
//     nodeTaintsPolicy).
//   - Scores: least allocated plus balanced cpu/memory plus 2× the spread
//     of a controller's pods, 2× preferred node affinity, 2× preferred pod
//     (anti-)affinity (the existing pods' terms too), 2× ScheduleAnyway
//     spread and 3× untolerated PreferNoSchedule taints.
//   - Binding through pods/binding and a "Scheduled" event
//     (events.k8s.io/v1). A 409 on bind means another instance bound the
//     pod first: counted as a conflict, not an error. With no feasible
//     node: PodScheduled=False, reason Unschedulable, an upstream-style
//     message ("0/3 nodes are available: 1 node(s) had untolerated taint
//     {x: y}, 2 Insufficient cpu.") and a FailedScheduling event. A pod
//     with schedulingGates gets PodScheduled=False, reason
//     SchedulingGated, until an update removes them; a pod created with
//     nodeName is never touched.
//   - Leader election through the Lease kube-system/kforge-scheduler
//     (15 s / 10 s / 2 s); only the leader runs the scheduling loop. On shutdown
//     the scheduling loop stops first, then the lease is released, so a standby
//     takes over within one retry period. A lost lease stops the loop
//     and Run returns roleconfig.ErrLeaseLost: the process exits non-zero
//     and systemd restarts it with empty caches, as upstream does.
//   - The health server on HealthAddress (plain HTTP, 127.0.0.1:10259):
//     /healthz, /readyz (informers synced, leading or standing by) and
//     /metrics from the scheduler's own registry:
//     kforge_scheduler_schedule_attempts_total{result},
//     kforge_scheduler_e2e_scheduling_duration_seconds,
//     kforge_scheduler_pending_pods and kforge_scheduler_leader.
//
// Not done yet: preemption, volumes, extended resources.
package scheduler
