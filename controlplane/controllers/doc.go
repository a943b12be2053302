// Package controllers is the controller-manager role: one process that,
// while it holds the "kforge-controller-manager" Lease in kube-system,
// runs the control loops that turn what users ask for into what the
// cluster holds. On shutdown the controllers stop before the Lease is
// released; a lost Lease stops them and Run returns
// roleconfig.ErrLeaseLost, so the process exits non-zero and systemd
// restarts it with empty caches, as upstream does.
//
// It owns the ReplicaSet controller (pods per replica set), the
// Deployment controller (replica sets per pod template, rolling and
// recreate rollouts, revision history), the Endpoints and EndpointSlice
// controller (addresses of the pods a Service selects), the
// ServiceAccount controller (a "default" account in every namespace), a
// simple garbage collector (dependents of deleted owners, background
// propagation, and orphaning when the owner carries the "orphan"
// finalizer), the namespace controller (empties a namespace being
// deleted through discovery and the metadata client, then removes its
// "kubernetes" finalizer), node IPAM (a /24 by default from
// clusterCIDR into each Node's spec.podCIDR, taken back when the Node
// is deleted; on only when clusterCIDR is set), the root-ca-cert-publisher
// (the kube-root-ca.crt ConfigMap in every namespace), the ClusterRole
// aggregation controller (the rules of roles with an aggregationRule),
// the DaemonSet controller
// (a pod per eligible node with the daemon tolerations and node-name
// affinity, templates as ControllerRevisions, RollingUpdate within
// maxUnavailable or maxSurge, OnDelete), the StatefulSet controller
// (pods NAME-ORDINAL with hostname and the governing Service's subdomain,
// OrderedReady or Parallel creation and scale-down from the highest
// ordinal, templates as ControllerRevisions, RollingUpdate from the
// highest ordinal down to the partition within maxUnavailable, OnDelete,
// failed pods recreated; claim templates become emptyDir volumes, as no
// PersistentVolumeClaims are served), the Job controller (pods to
// completions with the job-tracking finalizer, backoffLimit,
// activeDeadlineSeconds, suspend, Indexed mode), the ttl-after-finished
// controller, the CronJob controller (Jobs on a cron schedule in a time
// zone, concurrency policies, history limits), the disruption controller
// (PodDisruptionBudget status that the eviction subresource reads) and
// the node lifecycle controller
// (a node whose Lease and Ready heartbeat stand still for
// nodeMonitorGracePeriod turns Unknown; taints follow the conditions and
// spec.unschedulable; a NoExecute taint manager deletes the pods that do
// not tolerate a node's NoExecute taints, after their tolerationSeconds).
//
// Events go through one events.k8s.io/v1 broadcaster per process, each
// controller recording under upstream's reporting name (events.go).
//
// Every controller follows kubernetes/sample-controller: event handlers
// only enqueue keys, workers drain a rate-limited workqueue, and each
// sync is level-triggered, reads from listers, treats NotFound as done,
// deep-copies before changing anything and writes status through the
// status subresource. All controllers share one informer factory.
//
// Not here yet: HPA, PersistentVolumeClaims for StatefulSets, pod
// garbage collection, and foreground deletion in the garbage collector.
package controllers
