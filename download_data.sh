#!/usr/bin/env bash
# Download the nine MS MARCO Document / TREC-DL files (docs/data.md#input-files) into ./data, gunzipped.
#
#   bash download_data.sh            # fetch what is missing (about 8.5 GB compressed, 22 GB on disk)
#   bash download_data.sh --dry-run  # print what would be fetched from where
#
# Each file is tried at its original URL first, then at the current mirror (the MS MARCO files moved
# from msmarco.blob.core.windows.net to msmarco.z22.web.core.windows.net). The script prints which
# source served each file. A file counts as done when it exists together with its marker
# data/.<name>.done (written last, holding the URL); done files are skipped. Downloads go to
# data/<name>[.gz].part (resumed when possible), are gunzipped to data/<name>.tmp and only then
# renamed to data/<name>, so an interrupted run never leaves a partial file under a final name.
# Corrupt downloads (gunzip fails) are deleted and fetched again from the next source.
#
# Environment (mainly for tests and for users behind other mirrors):
#   SEDR_DATA_DIR        target folder (default: data)
#   SEDR_MSMARCO_BASES   space-separated base URLs of the MS MARCO files (tried in order)
#   SEDR_TREC_BASES      space-separated base URLs of the TREC-DL qrels
#   SEDR_DOWNLOADER      curl or wget (default: curl if installed, else wget)
#   SEDR_TRUST_EXISTING  1 = accept existing files without a marker (e.g. from the original script)
set -euo pipefail

DATA_DIR="${SEDR_DATA_DIR:-data}"
MSMARCO_BASES="${SEDR_MSMARCO_BASES:-https://msmarco.blob.core.windows.net/msmarcoranking https://msmarco.z22.web.core.windows.net/msmarcoranking}"
TREC_BASES="${SEDR_TREC_BASES:-https://trec.nist.gov/data/deep}"
MSMARCO_FILES=(
  msmarco-docs.tsv
  msmarco-doctrain-queries.tsv
  msmarco-doctrain-qrels.tsv
  msmarco-docdev-queries.tsv
  msmarco-docdev-qrels.tsv
  msmarco-test2019-queries.tsv
  msmarco-test2020-queries.tsv
)
TREC_FILES=(2019qrels-docs.txt 2020qrels-docs.txt)

DRY_RUN=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY_RUN=1 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg (try --help)" >&2; exit 2 ;;
  esac
done

if [[ -n "${SEDR_DOWNLOADER:-}" ]]; then
  DOWNLOADER="$SEDR_DOWNLOADER"
elif command -v curl >/dev/null 2>&1; then
  DOWNLOADER=curl
elif command -v wget >/dev/null 2>&1; then
  DOWNLOADER=wget
else
  echo "error: neither curl nor wget is installed" >&2
  exit 1
fi

# fetch URL OUT MODE: MODE is "fresh" (overwrite OUT) or "resume" (append to a partial OUT).
fetch() {
  local url="$1" out="$2" mode="$3"
  local -a opts=()
  case "$DOWNLOADER" in
    curl)
      opts=(-fL --retry 3 --connect-timeout 30)
      if [[ -t 2 ]]; then opts+=(--progress-bar); else opts+=(-sS); fi
      if [[ "$mode" == resume ]]; then opts+=(-C -); fi
      curl "${opts[@]}" -o "$out" "$url"
      ;;
    wget)
      opts=(--tries=3 --timeout=30)
      if [[ ! -t 2 ]]; then opts+=(-nv); fi
      if [[ "$mode" == resume ]]; then opts+=(-c); fi
      wget "${opts[@]}" -O "$out" "$url"
      ;;
    *) echo "error: unknown SEDR_DOWNLOADER '$DOWNLOADER' (curl or wget)" >&2; return 1 ;;
  esac
}

# unpack PART NAME GZ: gunzip (or move) PART to DATA_DIR/NAME through a temporary name.
unpack() {
  local part="$1" name="$2" gz="$3"
  local tmp="$DATA_DIR/$name.tmp"
  if [[ "$gz" == 1 ]]; then
    if ! gunzip -c "$part" > "$tmp"; then
      rm -f "$tmp"
      return 1
    fi
    rm -f "$part"
  else
    [[ -s "$part" ]] || return 1
    mv -f "$part" "$tmp"
  fi
  mv -f "$tmp" "$DATA_DIR/$name"
}

# attempt URL PART NAME GZ: resume a partial .gz if there is one, else (or if that fails) start over.
attempt() {
  local url="$1" part="$2" name="$3" gz="$4"
  if [[ "$gz" == 1 && -s "$part" ]]; then
    if fetch "$url" "$part" resume && unpack "$part" "$name" "$gz"; then
      return 0
    fi
    echo "  could not resume $part from $url; starting over" >&2
  fi
  if fetch "$url" "$part" fresh; then
    if unpack "$part" "$name" "$gz"; then
      return 0
    fi
    echo "  $url: download is corrupt; deleted" >&2
    rm -f "$part"
  fi
  return 1
}

# get NAME GZ BASES...: make DATA_DIR/NAME exist and be complete.
get() {
  local name="$1" gz="$2"
  shift 2
  local final="$DATA_DIR/$name" marker="$DATA_DIR/.$name.done"
  local suffix=""
  [[ "$gz" == 1 ]] && suffix=".gz"
  if [[ -f "$final" && -f "$marker" ]]; then
    echo "skip  $name (complete; from $(cat "$marker"))"
    return 0
  fi
  if [[ -f "$final" && "${SEDR_TRUST_EXISTING:-0}" == 1 ]]; then
    echo "keep  $name (existing file accepted: SEDR_TRUST_EXISTING=1)"
    [[ "$DRY_RUN" == 1 ]] || echo "existing file" > "$marker"
    return 0
  fi
  if [[ "$DRY_RUN" == 1 ]]; then
    local b urls=()
    for b in "$@"; do urls+=("$b/$name$suffix"); done
    echo "fetch $name from: ${urls[*]}"
    return 0
  fi
  rm -f "$DATA_DIR/$name.tmp" "$marker"
  local base url part="$DATA_DIR/$name$suffix.part"
  for base in "$@"; do
    url="$base/$name$suffix"
    echo "fetch $name <- $url"
    if attempt "$url" "$part" "$name" "$gz"; then
      echo "$url" > "$marker"
      echo "done  $name (source: $url)"
      return 0
    fi
    echo "  failed: $url" >&2
  done
  echo "error: could not download $name from any of: $*" >&2
  return 1
}

mkdir -p "$DATA_DIR"
# shellcheck disable=SC2086  # the bases are deliberately word-split
{
  for f in "${MSMARCO_FILES[@]}"; do get "$f" 1 $MSMARCO_BASES; done
  for f in "${TREC_FILES[@]}"; do get "$f" 0 $TREC_BASES; done
}
if [[ "$DRY_RUN" == 0 ]]; then
  echo "all files present in $DATA_DIR; next: python SeDR_preprocess.py --data_path ./data --max_seq_length 2048"
fi
