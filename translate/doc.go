// Package translate owns the piece between the wire protocol and the ref
// store that needs neither: it parses each statement text with PostgreSQL's
// own parser (pg_query), recognises the exact ref-store statements the legacy
// client sends (shared/spec/lakefs-refstore.md §3) structurally on the parse
// tree, describes them as PostgreSQL would (parameter type OIDs, result
// columns) and decodes bound parameters / encodes result values byte for byte
// as PostgreSQL does.
//
// The result of planning one statement text is a Plan: its Kind (RefStore,
// Transaction, Utility, Unsupported, Passthrough), its Shape (R1, B3, S6a,
// ...), where each argument comes from (a $n parameter or an inlined
// literal), ParamOIDs and result Fields. Executing a plan is not this
// package's business.
//
// Plans are cached per distinct statement text in a bounded LRU, so a named
// prepared statement is parsed once.
package translate
