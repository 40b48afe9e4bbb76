// Package wire owns the PostgreSQL wire protocol of kvproxy: the server side
// for clients (startup, TLS, authentication, simple and extended query,
// pipelining, COPY, cancel, errors, limits, shutdown) and the client side
// towards the upstream PostgreSQL (one upstream connection per client
// session, opened with pgconn so upstream auth, TLS and sslmode come from
// the DSN). It knows nothing about lakeFS, SQL translation or KV.
//
// # Session pooling (Config.UpstreamPoolSize)
//
// When a relayed client sends Terminate while its upstream connection is
// idle, the connection is reset (Sync, DISCARD ALL) and kept for the next
// session with the same startup parameters instead of being closed
// (pool.go). Anything unusual closes it instead: an error or a non-idle
// status in the reset, a cancel request in flight, a backend that spoke
// while kept, shutdown.
//
// # Modes
//
// With no Router (or a Router whose Passthrough method returns true for the
// session) a session is a pure relay that decodes only the 5-byte headers
// (type check, size limit) and ReadyForQuery (transaction status, for
// shutdown and the idle-in-transaction timeout). On Linux with cgo,
// plain-TCP sessions without an idle-in-transaction timeout are relayed by
// event loops, one per GOMAXPROCS, each a C thread with its own epoll set
// (cloop_linux.c) that owns the session's sockets meanwhile, as PgBouncer
// does: one blocking wait, then a read and a write per message, and no Go
// scheduler in between. Anything unusual (EOF, a malformed frame, shutdown,
// an I/O error) hands the session back to its goroutine, which continues
// with the goroutine relay: one goroutine per direction copying whole
// messages and flushing only when its input has nothing more buffered.
// Config.NoEventLoop forces the goroutine relay.
//
// With a Router, every statement text is routed once per session (the
// decision is cached by text, until a phase switch, see below):
//
//	type Router interface {
//		Route(ctx context.Context, sess *Session, sql string) (Handler, error)
//	}
//
// and the Handler is one of
//
//   - Forward(): (a) the statement goes upstream as is;
//   - Local(LocalStatement): (b) the proxy answers. Describe gives the
//     parameter OIDs for ParameterDescription (it receives the OIDs the
//     client put in Parse and must fill in the rest itself — with no
//     upstream nobody else can) and the result columns for RowDescription
//     (nil = NoData). Execute gets the bound parameters (values, per-value
//     formats, OIDs; Params.Decode scans one with pgtype) and a RowWriter
//     that encodes rows in the result formats the client asked for in Bind
//     (text or binary, per column; WriteRow encodes Go values with pgtype,
//     WriteRawRow takes encoded values), and returns the command tag or an
//     error (a *pgconn.PgError, e.g. from Errorf, keeps its SQLSTATE; any
//     other error is XX000). Row limits in Execute and PortalSuspended are
//     handled here. A CancelRequest cancels Execute's context (57014).
//   - ForwardInspect(InspectFunc): (c) the statement goes upstream, its
//     result (row description when known, rows, command tag or error, and
//     the bound parameters) is held back and given to the InspectFunc,
//     which may do more work (mirror a write to KV) before the response is
//     released; if it returns an error, the client gets that error instead
//     and the transaction fails as for any error. An inspected Execute is a
//     synchronisation point of the pipeline.
//   - ForwardObserve(BeforeFunc, InspectFunc): the same, for a function
//     that only watches (counts, compares, notes a transaction's state) and
//     whose error is ignored. As nothing can replace the result, it is not
//     a synchronisation point: the Execute and its Sync go upstream
//     together, one round trip instead of two.
//
// (d) Session.Upstream().Exec runs the upper layer's own statements on the
// session's upstream connection, synchronously and inside the client's
// current transaction (explicit, or the implicit one of the current
// pipeline), using private statement and portal names so it never
// disturbs the client's unnamed statement or portal. Call it only from the
// session goroutine, i.e. from Route, LocalStatement, a BeforeFunc
// (ForwardHooks) or OpenSession. From an InspectFunc it returns
// ErrExecInInspect: the upstream is still answering the inspected statement.
// Upstream().ExecPipeline sends several statements in one round trip and
// stops at the first that fails (PostgreSQL skips the rest), e.g. a write's
// log entry and the COMMIT after it.
//
// (e) Session.SetState/State attach upper-layer state (a transaction
// object); Session.OnClose registers callbacks run when the session ends
// however it ends (client gone, error, shutdown), e.g. to release locks.
// The optional SessionOpener interface on the Router is called once per
// session before its first statement.
//
// (f) ReadyForQuery's status is Session.TxStatus(): the upstream's, unless
// the local side owns the transaction. A LocalStatement that answers BEGIN
// calls sess.SetTxStatus('T'), COMMIT/ROLLBACK SetTxStatus('I'); a failed
// local statement inside a transaction makes it 'E' by itself; when the
// upstream has the transaction open (or a pipeline's implicit one), the
// proxy aborts it there as well with a statement that fails, so PostgreSQL's
// error semantics hold across forwarded and local statements.
//
// # Ordering and errors
//
// Responses reach the client in the order of its messages even when a
// pipeline (pgx batch) mixes forwarded and local statements: before a local
// response the proxy sends Flush upstream and relays every outstanding
// upstream response. After an error (upstream or local) every message up to
// Sync is discarded, as PostgreSQL does. Simple-protocol strings with several
// statements are split with pg_query's parser (or the Router's Split
// method; text the parser rejects is one statement); if every statement is forwarded the string goes upstream whole
// (PostgreSQL's implicit-transaction semantics apply), otherwise statement
// by statement, stopping at the first error: forwarded statements before a
// failing local one are then already committed unless an explicit
// transaction is open.
//
// # Phase switches (Rerouter)
//
// A Router that also implements Rerouter can change its decisions while
// clients stay connected (passthrough -> dual-write -> kv-primary ->
// kv-only and back) without the client or its pool noticing:
//
//	type Rerouter interface{ Reroute(sess *Session) bool }
//
// The session calls Reroute at every idle point: before a simple Query or
// the first extended message after a Sync, with no transaction open
// (TxStatus 'I') and nothing pending upstream. Inside a transaction or a
// pipeline nothing changes; the switch takes effect at the next idle
// point. When Reroute returns true:
//
//   - A routed session drops its cached decisions and routes every prepared
//     statement again. A statement that becomes local gets its local
//     Description (if Describe fails, the statement stays and its Bind and
//     Describe get that error until the next switch, as PostgreSQL reports a
//     statement that no longer plans); its upstream copy stays prepared and
//     is closed when the client closes the statement (the Close goes
//     upstream and its CloseComplete is the client's), so the name can be
//     prepared again. (An unnamed statement's stale upstream copy is simply
//     replaced by the next forwarded unnamed Parse.) A statement that
//     becomes forwarded and was never prepared upstream is prepared there
//     (same name, text and parameter types; the ParseComplete is swallowed,
//     an error is the Bind's or Describe's) right before its first forwarded
//     Bind or Describe. Portals are not re-routed: at an idle point only the
//     unnamed portal can exist and the next Bind replaces it.
//   - A relayed session (Passthrough at start) leaves the relay, before the
//     client's next message, for the routed path. To make that possible
//     the relay of a Rerouter's session follows prepared statements: it
//     decodes Parse and Close bodies (and Query bodies for DEALLOCATE) on
//     their way upstream and matches ParseComplete, CloseComplete,
//     ErrorResponse and ReadyForQuery by type alone on the way back, so
//     that it knows which statements exist upstream; the routed path
//     starts with them, routed anew (and with the ParameterStatus values
//     the upstream reported meanwhile, e.g. after a SET). The goroutine
//     relay stops its upstream reader at a message boundary (read deadline,
//     then the message in hand is finished); the event loop hands over its
//     unsent and unparsed bytes. No byte is lost in either direction. A
//     relay without a Rerouter does none of this; with one it costs about
//     50 ns per request (BenchmarkRelayTrack).
//
// SQL DEALLOCATE (pgx v4 closes statements this way) is followed on both
// paths; a DEALLOCATE of a statement that exists only in the proxy is
// answered by the proxy. SQL PREPARE is not followed: a statement prepared
// with it keeps working while forwarded, but the routed path does not know
// it. Reroute must be cheap (it runs on every idle-point message; an
// atomic epoch compare). The event loop's thread cannot call it: a
// Rerouter that is also a RerouteNotifier announces its changes, the
// thread then hands each tracked session back at its next idle point, and
// the session's goroutine asks Reroute (and gives the session back to the
// thread if it says no). The thread logs the messages the tracking follows
// for the goroutine to replay. A Rerouter without NotifyReroute keeps its
// relaying sessions on the goroutine relay. A panic in Reroute ends only
// its session (FATAL XX000), as for Route.
//
// # Upstream loss (UpstreamOptional)
//
// By default a session ends with its upstream connection: a relayed client
// sees what PostgreSQL sends (e.g. FATAL 57P01 on a restart), a routed one
// FATAL 08006, and a client cannot connect while the upstream is down. A
// Router that also implements
//
//	type UpstreamOptional interface{ UpstreamOptional(sess *Session) bool }
//
// and returns true for a routed session (asked when the routed path starts,
// after every Reroute that returns true, and at startup when the upstream
// is unreachable, after OpenSession) makes the upstream optional for it:
//
//   - Loss while idle or while only local statements run (read error, EOF,
//     or an upstream FATAL such as 57P01/57P02/57P03): nothing reaches the
//     client; the connection is closed and counted (Stats.UpstreamConnsLost,
//     UpstreamLossObserver); local statements go on.
//   - The next message that needs the upstream (a forwarded statement, the
//     Describe or Bind of a forwarded prepared statement, Upstream().Exec)
//     reconnects with the session's startup parameters plus the reported
//     values the client changed with SET (application_name, client_encoding,
//     DateStyle, IntervalStyle, TimeZone, standard_conforming_strings,
//     search_path, default_transaction_read_only), so that what the client
//     was told stays true; any reported value the new server still reports
//     differently (e.g. server_version after an upgrade) is sent to the
//     client as ParameterStatus. Other session state made with SET, SQL
//     PREPARE, temporary tables, advisory locks or LISTEN is gone, as with
//     any new connection (UpstreamEpoch tells the layer above). Prepared
//     statements are prepared again lazily before their first Bind or
//     Describe. If reconnecting fails, that message gets ERROR 08006 (or
//     the upstream's code, e.g. 57P03 while it starts up or shuts down) and
//     the session stays usable; nothing waits or retries in between (a
//     refused connection fails at once, an unreachable host after the
//     DSN's connect_timeout or Config.StartupTimeout).
//   - Loss while a forwarded request is in flight: the request gets ERROR
//     08006 (the upstream's FATAL, if any, in Detail), then ReadyForQuery
//     for a simple Query, FunctionCall or Sync (the rest of an extended
//     pipeline is discarded up to Sync, as after any error). A statement
//     whose Sync reached the upstream may have committed: as for any
//     broken connection, the client cannot know.
//   - Transactions: if a transaction was open upstream (the client's own,
//     or one the Router opened there with Exec), it is gone. Rather than
//     report 'I' (the client would go on as if its earlier statements had
//     committed) or close the connection (what a direct PostgreSQL client
//     sees), the session reports a failed transaction, 'E', as PostgreSQL
//     does after an error: forwarded statements get 25P02 without touching
//     the upstream, COMMIT/END/ROLLBACK/ABORT are answered ROLLBACK (so
//     pgx's Commit returns ErrTxCommitRollback), and Upstream().Exec
//     answers ROLLBACK/ABORT (and COMMIT with 25P02). Local statements are
//     the Router's: it sees TxStatus() == 'E' and ends its transaction
//     with SetTxStatus('I'). A transaction the Router owns locally with
//     nothing open upstream is not affected at all.
//   - A client that connects while the upstream is unreachable is let in
//     (not if Passthrough returns true for it): ParameterStatus values are
//     the last ones an upstream connection of this server reported (or
//     Config.ParameterStatus if none ever did) with the client's own
//     startup settings; the upstream connection is opened when first needed.
//   - BackendKeyData is always the proxy's; a CancelRequest goes to the
//     upstream backend the session uses at that moment.
//
// Relayed sessions (Passthrough) are never kept: there the client talks to
// PostgreSQL directly and sees what PostgreSQL does. Limit: a Router must
// not ignore an 08006 from Upstream().Exec inside a pipeline with
// forwarded messages in flight (their responses are gone with the
// connection; the error is what the client must get for them).
//
// # Limits and lifecycle
//
// Config bounds message size (08P01 and disconnect beyond it), connections
// (53300), startup time and idle-in-transaction time (25P03). Shutdown stops
// accepting, ends idle sessions with 57P01, lets sessions finish their
// transaction, and closes the rest when its context ends. Upstream failures
// are reported to the client as 08006 (08001 at connect) before the
// connection is closed, unless the Router makes the upstream optional (see
// above). Observer and Stats expose connection counters for the metrics
// layer.
package wire
