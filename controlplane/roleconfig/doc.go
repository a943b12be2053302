// Package roleconfig holds what every role's config file shares: reading
// it, strict YAML decoding over the role's defaults (an unknown field, an
// empty file or a second document is an error), relative paths resolved
// against the file's folder, and an error that lists every problem at once.
package roleconfig
