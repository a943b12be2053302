// Package pki owns the cluster's certificates: it issues the CAs, the
// service-account key pair and every leaf of the cluster's inventory with
// cfssl, writes them as PEM files grouped by host, builds the kubeconfigs
// with client-go's clientcmd, and reports what expires when.
//
// NewInventory computes, from the cluster spec alone, every certificate
// (subject, SANs, key usages, issuing CA, files), every kubeconfig and the
// files of each host's folder (Inventory.FilesFor): what the installer
// copies to that host. Init makes the PKI directory match the inventory,
// idempotently, and refuses a broken directory without changing it.
// KubeconfigFor builds one kubeconfig from the directory; Status reads every
// certificate's expiry. Reissue replaces leaves (all, a host's, or those
// expiring soon) with new keys under the kept CAs and rebuilds what embeds
// them. EncryptionKey writes, once, the key that encrypts
// Secrets at rest (an EncryptionConfiguration for the apiservers).
//
// Layout under the PKI directory: ca/ (the CAs and the service-account key
// pair; CA keys never leave it), clients/ (client certificates a role shares
// on several hosts), kubeconfigs/, and hosts/NAME/ (exactly what goes to
// host NAME).
package pki
