package refstore

import (
	"errors"
	"fmt"
)

// Errors of the ref store. Every error a function returns wraps one of these
// (or a kv error) with %w; match them with errors.Is.
var (
	// ErrNotFound: the entity does not exist (SQL: no row, or 0 rows
	// affected for a DELETE).
	ErrNotFound = errors.New("refstore: not found")
	// ErrAlreadyExists: an insert without ON CONFLICT found the key taken
	// (SQL: SQLSTATE 23505).
	ErrAlreadyExists = errors.New("refstore: already exists")
	// ErrConflict: a concurrent writer changed something this transaction
	// read or wrote; nothing or (only on the fallback path, see Txn.Commit)
	// a KV-safe prefix of the writes was applied. Retry the whole
	// transaction (SQL: SQLSTATE 40001).
	ErrConflict = errors.New("refstore: conflict with a concurrent transaction")
	// ErrRepositoryInDeletion: the repository record is marked IN_DELETION
	// by a delete that has not completed. It also matches ErrNotFound,
	// because such a repository is gone for every reader.
	ErrRepositoryInDeletion = fmt.Errorf("%w: repository in deletion", ErrNotFound)
	// ErrAmbiguous: a commit id prefix matches more than one commit. It
	// also matches ErrNotFound, as lakeFS's ErrRefAmbiguous does.
	ErrAmbiguous = fmt.Errorf("%w: ambiguous commit id prefix", ErrNotFound)
	// ErrInvalidRow: a row or argument cannot be represented in the KV
	// layout (a NULL where lakeFS cannot store one, an empty id, bad
	// metadata JSON, ...). The message says which column and why.
	ErrInvalidRow = errors.New("refstore: invalid row")
	// ErrCorrupt: a stored value does not decode as the expected message.
	ErrCorrupt = errors.New("refstore: corrupt value")
	// ErrTxnDone: the transaction was already committed or rolled back.
	ErrTxnDone = errors.New("refstore: transaction already finished")
	// ErrTooManyTries: a retried branch update kept losing races. It also
	// matches ErrConflict.
	ErrTooManyTries = fmt.Errorf("%w: too many tries", ErrConflict)
)
