#!/usr/bin/env node
"use strict";
/**
 * A Node.js client of engine.v1.EngineService that has only engine.proto.
 *
 * It knows nothing about the engines it calls: their request, response and error types arrive at run time
 * in ListEngines, as a FileDescriptorSet, and protobufjs turns those descriptors into message types. The same
 * approach works in any language with a protobuf runtime that can load descriptors dynamically.
 *
 * It runs three steps against a server of the built-in example engines and prints one JSON line per event,
 * each with a `step` field, so that a test (tests/e2e/test_node_client.py) can check what it saw:
 *
 *   echo         stream a request, decode every item of every message, print the finish reason
 *   cancel       cancel a `count` stream after a few items: the client sees CANCELLED, the server kills it
 *   typed_error  `count` with count -1: INVALID_ARGUMENT with an examples.v1.CountError detail
 *
 * Usage: node client.js [--target HOST:PORT] [--text TEXT] [--timeout SECONDS] [--cancel-after N]
 * Exit status: 0 when every step saw what the contract promises, 1 otherwise, 2 on bad arguments.
 */

const path = require("node:path");
const { parseArgs } = require("node:util");

const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");
const protobuf = require("protobufjs");
const descriptor = require("protobufjs/ext/descriptor");
const protojson = require("protobufjs/ext/protojson");

// The include root is protos/, as on the server, so that the file is known as "engine/v1/engine.proto" (the
// name its descriptor has everywhere, and the one server reflection reports).
const PROTOS_ROOT = path.resolve(__dirname, "../../protos");
const ENGINE_PROTO = "engine/v1/engine.proto";

const TYPE_URL_PREFIX = "type.googleapis.com/";
const STATUS_DETAILS_KEY = "grpc-status-details-bin";
const REQUEST_ID_KEY = "x-request-id";
const USAGE = "usage: node client.js [--target HOST:PORT] [--text TEXT] [--timeout SECONDS] [--cancel-after N]\n";

const loaderOptions = {
  includeDirs: [PROTOS_ROOT],
  // Field names as written in the .proto (request_id, finish_reason, type_url), like every other language.
  keepCase: true,
  longs: String,
  enums: String,
  // Off on purpose: with defaults on, every unset optional field of the descriptors in ListEngines would read
  // as set (oneof_index: 0 puts every field in a oneof), and protobufjs would rebuild the types wrongly.
  defaults: false,
  arrays: true,
  oneofs: true,
};

/**
 * google.rpc.Status, the rich error that travels in the trailing metadata `grpc-status-details-bin`. grpc-js
 * hands it over as raw bytes and ships no type for it; it is three fields, so it is declared here rather than
 * loaded from googleapis. Any is declared alongside because Status needs it.
 */
function richStatusType() {
  const root = new protobuf.Root();
  const options = { keepCase: true };
  protobuf.parse(
    'syntax = "proto3"; package google.protobuf; message Any { string type_url = 1; bytes value = 2; }',
    root,
    options,
  );
  protobuf.parse(
    'syntax = "proto3"; package google.rpc; import "google/protobuf/any.proto";' +
      "message Status { int32 code = 1; string message = 2; repeated google.protobuf.Any details = 3; }",
    root,
    options,
  );
  return root.lookupType("google.rpc.Status");
}

/** The typed description of one engine: its name and the message types built from its descriptors. */
class EngineTypes {
  constructor(info) {
    this.name = info.name;
    this.unary = Boolean(info.unary);
    // One root per engine: each FileDescriptorSet is complete on its own (the files with all their imports),
    // and two engines may ship the same file, which a single shared root would refuse as a duplicate.
    this.root = protobuf.Root.fromDescriptor(descriptor.FileDescriptorSet.fromObject(info.descriptors));
    this.request = this.root.lookupType(info.request_type);
    this.response = this.root.lookupType(info.response_type);
    this.error = info.error_type ? this.root.lookupType(info.error_type) : null;
  }

  /** Encode a request given as ProtoJSON (proto or lowerCamel field names; unknown fields are an error). */
  pack(json) {
    const message = protojson.fromJson(this.request, json);
    return { type_url: TYPE_URL_PREFIX + fullName(this.request), value: this.request.encode(message).finish() };
  }

  /** Decode an Any with this engine's types; the result is ProtoJSON, as a gRPC CLI would print it. */
  unpack(any) {
    const name = any.type_url.slice(any.type_url.lastIndexOf("/") + 1);
    const type = this.root.lookup(name);
    if (!(type instanceof protobuf.Type)) {
      throw new Error(`engine ${this.name}: ${name} is not among the types ListEngines described`);
    }
    return { "@type": any.type_url, ...protojson.toJson(type, type.decode(any.value)) };
  }
}

// protobufjs full names start with a dot (".examples.v1.EchoRequest"); protobuf's own names do not.
function fullName(type) {
  return type.fullName.replace(/^\./, "");
}

function emit(step, fields) {
  process.stdout.write(`${JSON.stringify({ step, ...fields })}\n`);
}

class Client {
  constructor(target, timeoutSeconds) {
    const definition = protoLoader.loadSync(ENGINE_PROTO, loaderOptions);
    const { EngineService } = grpc.loadPackageDefinition(definition).engine.v1;
    this.stub = new EngineService(target, grpc.credentials.createInsecure());
    this.timeoutMs = timeoutSeconds * 1000;
    this.statusType = richStatusType();
  }

  // Every call gets a deadline, so a server that never answers fails the run instead of hanging it.
  deadline() {
    return new Date(Date.now() + this.timeoutMs);
  }

  /** ListEngines, with each engine's types built from the descriptors it returns. */
  listEngines() {
    return new Promise((resolve, reject) => {
      this.stub.ListEngines({}, { deadline: this.deadline() }, (error, response) => {
        if (error) {
          reject(error);
          return;
        }
        resolve(new Map(response.engines.map((info) => [info.name, new EngineTypes(info)])));
      });
    });
  }

  /**
   * Start a generation and collect it. `onItems(items, message, call)` sees every message as it arrives (a
   * message carries one or more items: the server coalesces what is already produced), and may cancel the
   * call. Resolves with what was received; rejects with the grpc error, which carries what was received
   * before it as `error.received`.
   */
  generate(engine, requestJson, { requestId = "", onItems = () => {} } = {}) {
    const received = { requestId: null, messages: 0, items: [], finishReason: null };
    const call = this.stub.Generate(
      { engine: engine.name, request: engine.pack(requestJson), request_id: requestId },
      { deadline: this.deadline() },
    );
    return new Promise((resolve, reject) => {
      let ended = false;
      let status = null;
      let failure = null;
      // grpc-js reports the status and the end of the data separately, in either order; settling only once both
      // are in means no item is still buffered when the caller looks at `received`.
      const settle = () => {
        if (!ended || status === null) return;
        if (failure !== null) {
          reject(failure);
        } else if (status.code === grpc.status.OK) {
          resolve(received);
        } else {
          const error = Object.assign(new Error(`${grpc.status[status.code]}: ${status.details}`), status);
          error.received = received;
          reject(error);
        }
      };
      call.on("metadata", (metadata) => {
        received.requestId = metadata.get(REQUEST_ID_KEY)[0] ?? null;
      });
      call.on("data", (message) => {
        if (failure !== null) return;
        try {
          const items = message.items.map((any) => engine.unpack(any));
          received.messages += 1;
          received.items.push(...items);
          // Only the last message carries a reason; a stream without one was cut short, whatever it delivered.
          if (message.finish_reason && message.finish_reason !== "FINISH_REASON_UNSPECIFIED") {
            received.finishReason = message.finish_reason;
          }
          onItems(items, message, call);
        } catch (error) {
          // An item we cannot decode ends the call: reading on would only hide the problem.
          failure = error;
          call.cancel();
        }
      });
      // grpc-js also emits every non-OK status as an error event, which must have a listener or it would throw;
      // the status event below carries the same status (and the trailing metadata) and is where it is handled.
      call.on("error", () => {});
      call.on("status", (s) => {
        status = s;
        settle();
      });
      call.on("end", () => {
        ended = true;
        settle();
      });
    });
  }

  /** Decode the rich status of a failed call: its typed details, unpacked with the engine's own types. */
  richStatus(engine, error) {
    const [raw] = error.metadata ? error.metadata.get(STATUS_DETAILS_KEY) : [];
    if (raw === undefined) return null;
    const status = this.statusType.decode(raw);
    return { code: status.code, message: status.message, details: status.details.map((any) => engine.unpack(any)) };
  }

  close() {
    this.stub.close();
  }
}

class Failure extends Error {}

function expect(condition, message) {
  if (!condition) throw new Failure(message);
}

async function stepEcho(client, engines, text) {
  const echo = engines.get("echo");
  expect(echo, "the server serves no `echo` engine");
  let index = 0;
  const received = await client.generate(echo, { text, delay_s: 0 }, {
    onItems: (items) => emit("echo", { event: "message", message: ++index, items }),
  });
  const words = received.items.map((item) => item.text);
  emit("echo", {
    event: "finished",
    finish_reason: received.finishReason,
    request_id: received.requestId,
    messages: received.messages,
    words,
  });
  expect(received.finishReason === "FINISH_REASON_COMPLETED", `echo finished with ${received.finishReason}`);
  expect(JSON.stringify(words) === JSON.stringify(text.split(/\s+/).filter(Boolean)), "echo returned other words");
  expect(received.requestId, "no x-request-id in the initial metadata");
}

async function stepCancel(client, engines, cancelAfter) {
  const count = engines.get("count");
  expect(count, "the server serves no `count` engine");
  // A client-chosen id: the server must use it, and it is what a later Stop would name.
  const requestId = `node-cancel-${process.pid}-${Date.now()}`;
  let seen = 0;
  let itemsAtCancel = null;
  try {
    // Far more items than we read, paced, so the cancel lands mid-stream (the deadline bounds a broken cancel).
    await client.generate(count, { count: 10000, delay_s: 0.02, size: 8 }, {
      requestId,
      onItems: (items, message, call) => {
        seen += items.length;
        emit("cancel", { event: "message", items });
        if (itemsAtCancel === null && seen >= cancelAfter) {
          itemsAtCancel = seen;
          // Cancelling is the client's kill: the server kills the generation and its engine's finally runs.
          call.cancel();
        }
      },
    });
    throw new Failure("the cancelled `count` stream ended normally");
  } catch (error) {
    // Only a grpc status is this step's outcome; anything else is a failure of its own.
    if (error instanceof Failure || typeof error.code !== "number") throw error;
    const code = grpc.status[error.code] ?? String(error.code);
    emit("cancel", {
      event: "finished",
      code,
      items_at_cancel: itemsAtCancel,
      items_received: error.received ? error.received.items.length : null,
      finish_reason: error.received ? error.received.finishReason : null,
      request_id: error.received ? error.received.requestId : null,
    });
    expect(error.code === grpc.status.CANCELLED, `the cancelled stream ended with ${code}: ${error.details}`);
    expect(itemsAtCancel !== null, "the stream failed before the cancel");
    expect(error.received.finishReason === null, "a cancelled stream must not carry a finish reason");
    expect(error.received.requestId === requestId, "the server did not use the client's request id");
  }
}

async function stepTypedError(client, engines) {
  const count = engines.get("count");
  expect(count, "the server serves no `count` engine");
  expect(count.error, "`count` declares no error type");
  try {
    await client.generate(count, { count: -1 });
    throw new Failure("`count` with count -1 succeeded");
  } catch (error) {
    if (error instanceof Failure || typeof error.code !== "number") throw error;
    const rich = client.richStatus(count, error);
    emit("typed_error", {
      code: grpc.status[error.code] ?? String(error.code),
      message: error.details,
      request_id: error.received ? error.received.requestId : null,
      status: rich,
    });
    expect(error.code === grpc.status.INVALID_ARGUMENT, `expected INVALID_ARGUMENT, got ${grpc.status[error.code]}`);
    expect(rich !== null, `no ${STATUS_DETAILS_KEY} in the trailing metadata`);
    // The rich status must agree with the plain one, or a client reading either would see different errors.
    expect(rich.code === error.code && rich.message === error.details, "the rich status disagrees with the call's");
    expect(rich.details.length === 1, `expected one detail, got ${rich.details.length}`);
    expect(rich.details[0]["@type"] === TYPE_URL_PREFIX + fullName(count.error), "the detail is not a CountError");
  }
}

function parseCommandLine() {
  const { values } = parseArgs({
    options: {
      target: { type: "string", default: "127.0.0.1:50051" },
      text: { type: "string", default: "hello from node over grpc" },
      timeout: { type: "string", default: "10" },
      "cancel-after": { type: "string", default: "3" },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  const timeout = Number(values.timeout);
  const cancelAfter = Number(values["cancel-after"]);
  if (!(timeout > 0) || !(Number.isInteger(cancelAfter) && cancelAfter > 0)) {
    throw new TypeError("--timeout must be a positive number of seconds and --cancel-after a positive integer");
  }
  return { ...values, timeout, cancelAfter };
}

async function main() {
  let args;
  try {
    args = parseCommandLine();
  } catch (error) {
    process.stderr.write(`${error.message}\n${USAGE}`);
    return 2;
  }
  if (args.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const client = new Client(args.target, args.timeout);
  try {
    const engines = await client.listEngines();
    emit("engines", {
      engines: [...engines.values()].map((e) => ({
        name: e.name,
        request_type: fullName(e.request),
        response_type: fullName(e.response),
        error_type: e.error ? fullName(e.error) : null,
        unary: e.unary,
      })),
    });
    await stepEcho(client, engines, args.text);
    await stepCancel(client, engines, args.cancelAfter);
    await stepTypedError(client, engines);
    emit("done", { ok: true });
    return 0;
  } catch (error) {
    // A failed expectation or a grpc status says what went wrong; anything else (a bug here) shows its stack.
    const reason = error instanceof Failure || typeof error.code === "number" ? error.message : error.stack;
    emit("done", { ok: false, error: error.message });
    process.stderr.write(`client.js: ${reason}\n`);
    return 1;
  } finally {
    client.close();
  }
}

main().then((code) => {
  process.exitCode = code;
});
