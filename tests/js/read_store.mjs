// Read arrays of a Zarr store over HTTP with zarrita.js and print what it read as JSON.
//
// Usage: node read_store.mjs SPEC_JSON
//   SPEC_JSON: {"url": "http://127.0.0.1:PORT/", "consolidated": true,
//               "token": null | "...",
//               "reads": [{"path": "t2m", "selection": null | [null | int | [start, stop]]}]}
// Prints: {"contents": [paths listed by consolidated metadata] | null,
//          "reads": [{"path", "dtype", "shape", "bytes": base64 of the values in C order,
//                     native byte order}]}
// Errors go to stderr and the exit status is 1.
import * as zarr from "zarrita";

const spec = JSON.parse(process.argv[2]);
const overrides = spec.token ? { headers: { Authorization: `Bearer ${spec.token}` } } : {};
let store = new zarr.FetchStore(spec.url, { overrides });
let contents = null;
if (spec.consolidated) {
  store = await zarr.withConsolidatedMetadata(store);
  contents = store.contents().map((node) => `${node.kind}:${node.path}`);
}
const root = zarr.root(store);

function selection(items) {
  if (items === null) return null;
  return items.map((item) => {
    if (item === null) return null;
    if (Array.isArray(item)) return zarr.slice(item[0], item[1]);
    return item;
  });
}

const reads = [];
for (const read of spec.reads) {
  const array = await zarr.open(root.resolve(read.path), { kind: "array" });
  const chunk = await zarr.get(array, selection(read.selection));
  const values = chunk.data;
  const bytes = Buffer.from(values.buffer, values.byteOffset, values.byteLength);
  reads.push({
    path: read.path,
    dtype: array.dtype,
    shape: chunk.shape,
    stride: chunk.stride,
    bytes: bytes.toString("base64"),
  });
}
process.stdout.write(JSON.stringify({ contents, reads }));
