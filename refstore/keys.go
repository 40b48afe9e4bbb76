package refstore

import "fmt"

// Partitions and keys of lakeFS v0.80.0 (pkg/graveler/model.go,
// pkg/kv/migration.go). Values are proto.Marshal of the graveler messages,
// except the schema version, which is ASCII.
const (
	// GravelerPartition holds every repository record under RepoKeyPrefix.
	GravelerPartition = "graveler"
	// SchemaPartition and SchemaVersionKey hold the KV schema version that
	// lakeFS checks at startup; SchemaVersion is what lakeFS 0.80 writes.
	SchemaPartition  = "kv-internal-metadata"
	SchemaVersionKey = "kv/schema/version"
	SchemaVersion    = "1"

	RepoKeyPrefix   = "repos/"
	BranchKeyPrefix = "branches/"
	CommitKeyPrefix = "commits/"
	TagKeyPrefix    = "tags/"
	// ProtectedBranchesKey holds BranchProtectionRules in a repository's
	// partition.
	ProtectedBranchesKey = "settings/protected_branches"
)

// RepoKey is the key of a repository record in GravelerPartition.
func RepoKey(repoID string) []byte { return []byte(RepoKeyPrefix + repoID) }

// RepoPartition is the partition of a repository instance: the repository
// id, "-", and the instance uid chosen when the repository was created.
func RepoPartition(repoID, instanceUID string) []byte {
	return []byte(repoID + "-" + instanceUID)
}

// BranchKey, CommitKey and TagKey are keys inside a RepoPartition.
func BranchKey(branchID string) []byte { return []byte(BranchKeyPrefix + branchID) }
func CommitKey(commitID string) []byte { return []byte(CommitKeyPrefix + commitID) }
func TagKey(tagID string) []byte       { return []byte(TagKeyPrefix + tagID) }

// StagingPartition is the partition of a staging token: the token verbatim.
// Staged entries are keyed by the raw object key, with no prefix.
func StagingPartition(token string) []byte { return []byte(token) }

// checkID rejects ids that would make a key ambiguous: an empty id turns a
// key into its prefix (repos/ alone), and lakeFS never produces one.
func checkID(what, id string) error {
	if id == "" {
		return fmt.Errorf("%w: empty %s", ErrInvalidRow, what)
	}
	return nil
}

// writeClass orders the writes of a transaction (see Txn.Commit). The
// caller of a buffered write names it, because a staged object key may look
// like any entity key.
type writeClass int

const (
	classStaging writeClass = iota
	classCommit
	classTag // tags and settings
	classBranch
	classRepo
)
