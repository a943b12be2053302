// Command kforge installs a highly available Kubernetes-compatible cluster
// over SSH, and is every daemon of that cluster.
package main

import (
	"os"

	"kforge.dev/kforge/cmd/kforge/app"
)

func main() {
	os.Exit(app.Main())
}
