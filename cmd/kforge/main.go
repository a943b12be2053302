package main

import (
	"os"

	"kforge.dev/kforge/cmd/kforge/app"
)

func main() {
	os.Exit(app.Main())
}
