package kv

import "fmt"

// CheckKey validates the arguments every keyed operation takes.
func CheckKey(partitionKey, key []byte) error {
	if len(partitionKey) == 0 {
		return ErrMissingPartitionKey
	}
	if len(key) == 0 {
		return ErrMissingKey
	}
	return nil
}

// CheckWrite validates the arguments of Set and SetIf.
func CheckWrite(partitionKey, key, value []byte) error {
	if err := CheckKey(partitionKey, key); err != nil {
		return err
	}
	if value == nil {
		return ErrMissingValue
	}
	return nil
}

// CheckOps validates every operation of a batch.
func CheckOps(ops []Op) error {
	for i, op := range ops {
		var err error
		switch op.Kind {
		case OpSet, OpSetIf:
			err = CheckWrite(op.PartitionKey, op.Key, op.Value)
		case OpDelete, OpDeleteIf, OpCheck:
			err = CheckKey(op.PartitionKey, op.Key)
		default:
			err = fmt.Errorf("%w: unknown op kind %d", ErrOperationFailed, op.Kind)
		}
		if err != nil {
			return fmt.Errorf("batch op %d: %w", i, err)
		}
	}
	return nil
}
