package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/taskhub/taskhub/backend"
	"github.com/taskhub/taskhub/backend/postgres"
	"github.com/taskhub/taskhub/backend/sqlite"
)

// openBackend opens the storage named by --backend: a postgres:// URL, or a
// SQLite file path. An unset --backend uses TASKHUB_POSTGRES_URL when it is
// set, else the flag's default file.
func openBackend(cmd *cobra.Command) (backend.Backend, error) {
	spec, _ := cmd.Flags().GetString("backend")
	hub, _ := cmd.Flags().GetString("hub")
	if f := cmd.Flags().Lookup("backend"); f != nil && !f.Changed {
		if env := os.Getenv(postgres.EnvURL); env != "" {
			spec = env
		}
	}
	if strings.HasPrefix(spec, "postgres://") || strings.HasPrefix(spec, "postgresql://") {
		be, err := postgres.Open(cmd.Context(), spec, postgres.Options{Hub: hub})
		if err != nil {
			return nil, fmt.Errorf("open PostgreSQL hub %q: %w", hub, err)
		}
		return be, nil
	}
	be, err := sqlite.Open(spec, sqlite.Options{Hub: hub})
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", spec, err)
	}
	return be, nil
}
