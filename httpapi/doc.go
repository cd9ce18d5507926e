// Package httpapi serves the Durable Functions instance-management and
// entity HTTP API over a [taskhub.Client], so that tools written for Durable
// Functions (status polling, raising events, terminating, purging,
// signalling and reading entities) work against a taskhub task hub. [New] returns an http.Handler to mount in any server;
// `taskhub serve` runs it next to a worker.
//
// # Routes
//
// Paths are relative to Options.BasePath (default
// /runtime/webhooks/durabletask, as in Durable Functions 2.x). The taskHub
// and connection query parameters of Durable Functions are accepted and
// ignored: a handler serves the one hub its client is bound to.
//
//	POST   /orchestrators/{functionName}[/{instanceId}]  start; body = JSON input (empty: none)
//	GET    /instances/{instanceId}                       status (showInput, showHistory, showHistoryOutput,
//	                                                     returnInternalServerErrorOnFailure)
//	GET    /instances                                    list (instanceIdPrefix, createdTimeFrom, createdTimeTo,
//	                                                     runtimeStatus, showInput, top; x-ms-continuation-token)
//	DELETE /instances/{instanceId}                       purge one finished instance
//	DELETE /instances                                    purge finished instances (createdTimeFrom required,
//	                                                     createdTimeTo, runtimeStatus, instanceIdPrefix)
//	POST   /instances/{instanceId}/raiseEvent/{eventName}  body = JSON event data (empty: null)
//	POST   /instances/{instanceId}/terminate?reason=     (recursive=true also terminates sub-orchestrations)
//	POST   /instances/{instanceId}/suspend?reason=
//	POST   /instances/{instanceId}/resume?reason=
//	POST   /instances/{instanceId}/restart               (restartWithNewInstanceId, default true)
//	POST   /instances/{instanceId}/rewind?reason=        202; 409 instance_not_failed unless Failed
//	POST   /entities/{name}/{key}?op={operation}         signal; body = JSON input (empty: none); 202
//	                                                     (signalTime: deliver at this RFC 3339 time)
//	GET    /entities/{name}/{key}                        200 with the entity's state; 404 entity_not_found
//	DELETE /entities/{name}/{key}                        signal the operation "delete"; 202
//	GET    /entities[/{name}]                            list (fetchState, includeDeleted, namePrefix, top;
//	                                                     x-ms-continuation-token)
//
// Starting and restarting answer 202 Accepted with a Location header (the
// status URI), a Retry-After header and the Durable Functions management
// payload ([ManagementPayload]): id, statusQueryGetUri, sendEventPostUri,
// terminatePostUri, purgeHistoryDeleteUri, suspendPostUri, resumePostUri,
// and restartPostUri. The URIs are absolute (see Options.PublicBaseURL);
// when the caller authenticated with the code query parameter, the URIs
// carry it too, as Durable Functions does, so that they can be followed as
// they are.
//
// The status of an instance ([Instance]) is answered with 202 while it is
// Pending, Running, Suspended or ContinuedAsNew (with Location and
// Retry-After, so that a client can poll it), and 200 once it is Completed,
// Failed or Terminated — or 500 for a Failed one when
// returnInternalServerErrorOnFailure=true; that 500 body is the status with
// an added "error" member (code instance_failed). Times are RFC 3339 in UTC
// with second precision, as Durable Functions writes them; history event
// timestamps keep their full precision. showInput defaults to true for one
// instance and false for listings (as in Durable Functions). Without
// showHistoryOutput the history omits the payloads of ExecutionCompleted,
// TaskCompleted and SubOrchestrationCompleted events; without showInput it
// also omits the ExecutionStarted input.
//
// A listing is a JSON array of at most top instances (default 100, at most
// 1000), in instance-ID order. When more match, the response carries an
// x-ms-continuation-token header; sending it back as a request header
// returns the next page. createdTimeFrom is inclusive, createdTimeTo
// exclusive; runtimeStatus is a comma-separated list of Pending, Running,
// Completed, ContinuedAsNew, Failed, Terminated and Suspended (any case).
//
// Raising an event, terminating, suspending and resuming answer 202 with
// an empty body, 404 for an unknown instance and 410 Gone for a finished
// one. Purging one instance answers 200 with {"instancesDeleted":1}; purging
// by filter answers 200 with the count, also when it is 0 (Durable
// Functions answers 404 there; a count is easier to script against). The
// runtimeStatus filter of a purge may name only Completed, Failed and
// Terminated.
//
// Entities are named by their name (case-insensitive; answers give it in
// lower case) and key, each one escaped path segment, so a key may hold
// '/' (as %2F) and '@'; a name may not hold '@'. Signalling and deleting
// answer 202 with an empty body once the signal is stored: the operation
// runs later, and its failure is not reported to the signaller (see
// docs/entities.md); signalTime, a taskhub addition, delays it to that time.
// Signalling an entity that has no state is how it is created. DELETE signals the operation "delete": an entity that does not
// define it has its state deleted, as in Durable Functions.
//
// Reading an entity answers 200 with its state as the body, as Durable
// Functions does, and 404 entity_not_found when it has no state (never
// set, or deleted). The answer also carries Last-Modified (when its last
// batch of operations committed) and, as taskhub additions, the headers
// x-taskhub-entity-backlog (requests waiting for its lock) and, while an
// orchestration holds its lock, x-taskhub-entity-locked-by (that
// orchestration's instance ID).
//
// An entity listing is a JSON array of at most top entities (default 100,
// at most 1000) in ID order, paged with x-ms-continuation-token as the
// instance listing is, each in the Durable Functions shape
//
//	{"entityId":{"name":"counter","key":"k1"},"lastOperationTime":"…","state":…,
//	 "hasState":true,"backlogQueueSize":0}
//
// where state is null unless fetchState=true, lastOperationTime is RFC 3339
// in UTC with full precision, and hasState, lockedBy (present while locked)
// and backlogQueueSize are taskhub additions. A name in the path selects
// the entities of that name; namePrefix (a taskhub addition; not with a
// name) those whose name starts with it. Entities without state are listed
// only with includeDeleted=true.
//
// Deliberate differences from Durable Functions: purging an instance that
// has not finished is refused with 400 instance_not_finished (Durable
// Functions answers 404, which cannot be told apart from an unknown
// instance); restarting with restartWithNewInstanceId=false while the
// instance still runs answers 409 instance_exists. Signalling an entity
// without op is refused with 400 missing_parameter (Durable Functions sends
// the empty operation name, which taskhub entities cannot have). The entity
// listing parameters lastOperationTimeFrom and lastOperationTimeTo are
// refused with 400 invalid_parameter rather than ignored: taskhub cannot
// filter entities by time. The key "$" is not special (Durable Functions
// reads it as the empty key, which taskhub entities cannot have).
//
// # Security
//
// With Options.Keys set, every request must carry one of the keys: in the
// x-functions-key header, as Authorization: Bearer <key>, or in the code
// query parameter. Keys are compared in constant time; a request without a
// valid key gets 401 before any routing, so unauthenticated callers learn
// nothing about the routes or instances. An empty string in Keys never
// matches (a misconfigured key locks the API rather than opening it).
// Without keys the API is open: bind it to a loopback address only (see
// [ValidateListenAddress], which `taskhub serve` applies).
//
// Request bodies are limited to Options.MaxBodyBytes (default 4 MiB), path
// and query values are validated (instance IDs with
// [taskhub.ValidateInstanceID], entity IDs as [taskhub.ParseEntityID]
// does), and bodies must be JSON.
//
// # Errors
//
// Every 4xx and 5xx answer is JSON of the shape
//
//	{"error":{"code":"instance_not_found","message":"…"}}
//
// with one of these stable codes (the Code* constants):
//
//	unauthorized               401  no valid API key
//	not_found                  404  no such route
//	method_not_allowed         405  the route exists for other methods (see the Allow header)
//	payload_too_large          413  the body exceeds Options.MaxBodyBytes
//	invalid_json               400  the body is not valid JSON
//	invalid_input              400  the input does not decode into the orchestrator's input type
//	invalid_instance_id        400  the instance ID (path) or ID prefix is not acceptable
//	invalid_entity_id          400  the entity name or key (path), or namePrefix, is not acceptable
//	invalid_function_name      400  empty, too long, not UTF-8 or with control characters
//	invalid_event_name         400  likewise for event names
//	invalid_parameter          400  a malformed, unsupported or conflicting query parameter (the message names it)
//	missing_parameter          400  a required query parameter is absent (createdTimeFrom of a purge, op of a signal)
//	invalid_continuation_token 400  the x-ms-continuation-token header is not a token this API issued
//	instance_not_found         404  no instance has this ID
//	entity_not_found           404  the entity has no state
//	instance_exists            409  an instance with this ID is pending, running or suspended
//	instance_finished          410  the operation needs an instance that has not finished
//	instance_not_finished      400  a purge of an instance that has not finished
//	instance_failed            500  returnInternalServerErrorOnFailure and the instance failed
//	instance_not_failed        409  rewind of an instance that has not failed
//	not_implemented            501  an operation this server does not offer
//	unavailable                503  the task hub does not exist or the request was cancelled
//	internal_error             500  anything else; the details are logged, not returned
package httpapi
