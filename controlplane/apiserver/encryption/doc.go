// Package encryption is encryption at rest for the apiserver: the model of
// kube-apiserver's EncryptionConfiguration (apiserver.config.k8s.io/v1,
// the file of --encryption-provider-config), its validation, and the
// storage.Transformer each resource entry becomes.
//
// Providers: aesgcm and secretbox, each with a list of keys (the first
// encrypts, all decrypt), and identity (plaintext). The first provider of
// an entry writes; every provider reads, so data written before
// encryption was enabled stays readable while identity is listed, and
// data encrypted with a retired key while that key is. Encrypted values
// carry upstream's prefix, "k8s:enc:<provider>:v1:<key name>:", so an
// etcd written by either server reads the same.
//
// Not supported: aescbc (upstream discourages it) and kms.
package encryption
