package entity

import "strings"

// ID returns the instance ID of the entity (name, key): "@name@key" with the
// name in lower case, as in Durable Functions, so that entity names are
// case-insensitive and an entity lives on a partition like any instance.
// The name must not contain '@' (the key may).
func ID(name, key string) string {
	return "@" + strings.ToLower(name) + "@" + key
}

// ParseID splits an entity instance ID into its name and key. ok is false
// when id is not an entity ID (an orchestration's, for instance): it must
// start with '@' and have a non-empty name ended by a second '@'.
func ParseID(id string) (name, key string, ok bool) {
	rest, found := strings.CutPrefix(id, "@")
	if !found {
		return "", "", false
	}
	name, key, found = strings.Cut(rest, "@")
	if !found || name == "" {
		return "", "", false
	}
	return name, key, true
}
