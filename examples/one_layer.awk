# examples/one_layer.awk - keep one transformer layer of `kernc dump --print-changed` output.
#
#   kernc dump examples/gpt2_tiny.onnx --print-changed | awk -v layer=0 -f examples/one_layer.awk
#
# Prints each IR section's header, with the number of the layer's ops added, then the layer's op
# lines (weights and other layers dropped). A node belongs to layer K when its ONNX name is
# /h.K/... (the exporter's loc, as GPT-2 exports name them); a node without a loc (made by a pass:
# fused ops, canonical reshapes) to the highest layer among its operands, where a weight
# "h.K.*" is in layer K and any other weight (ln_f, the embeddings) is in none, so the final
# norm does not join the last layer. The last section, the pipeline's result, has no after=.
# With strip=1 the loc("...") suffixes are dropped to keep lines short.

function flush() {
  if (hdr != "") {
    printf "%s  [layer %d: %d ops]\n%s", hdr, layer, nops, body
  }
  body = ""
  nops = 0
}

BEGIN {
  if (layer == "") layer = 0
  layer += 0
}

/^# kir/ {
  flush()
  hdr = $0
  delete lay
  next
}

/^ *%[0-9]+.* = / {
  defs = $0
  sub(/ = .*/, "", defs)
  gsub(/ /, "", defs)
  k = -1
  other = 0
  if (match($0, /loc\("\/h\.[0-9]+\//)) {
    k = substr($0, RSTART + 8, RLENGTH - 9) + 0
  } else if (match($0, / = weight "h\.[0-9]+\./)) {
    k = substr($0, RSTART + 13, RLENGTH - 14) + 0
  } else if ($0 ~ / = weight /) {
    other = 1
  } else if (!index($0, "loc(")) {
    rhs = $0
    sub(/^[^=]*= /, "", rhs)
    sub(/ : [^:]*$/, "", rhs) # the result types
    while (match(rhs, /%[0-9]+/)) {
      v = substr(rhs, RSTART, RLENGTH)
      rhs = substr(rhs, RSTART + RLENGTH)
      if (v in lay && lay[v] == "none") {
        k = -1
        break
      }
      if (v in lay && lay[v] > k) k = lay[v]
    }
  }
  n = split(defs, d, /,/)
  for (i = 1; i <= n; i++) lay[d[i]] = other ? "none" : k
  if (k == layer && $0 !~ / = weight /) {
    line = $0
    if (strip) sub(/ loc\("[^"]*"\)$/, "", line)
    body = body line "\n"
    nops++
  }
}

END { flush() }
