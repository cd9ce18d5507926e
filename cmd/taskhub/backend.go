package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/taskhub/taskhub/backend"
	"github.com/taskhub/taskhub/backend/sqlite"
)

// openBackend opens the storage named by --backend: a SQLite file path.
func openBackend(cmd *cobra.Command) (backend.Backend, error) {
	spec, _ := cmd.Flags().GetString("backend")
	hub, _ := cmd.Flags().GetString("hub")
	if strings.HasPrefix(spec, "postgres://") || strings.HasPrefix(spec, "postgresql://") {
		return nil, fmt.Errorf("--backend %q: the PostgreSQL backend is not built yet; use a SQLite file path", spec)
	}
	be, err := sqlite.Open(spec, sqlite.Options{Hub: hub})
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", spec, err)
	}
	return be, nil
}
