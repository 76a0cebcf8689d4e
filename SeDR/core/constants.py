"""Constants of the original pipeline, each with the docs section that explains it."""

# RoBERTa special ids of the released STAR checkpoint (docs/README.md#notation). Our code reads the ids
# from the tokenizer/config where it can; these are the defaults and the oracle values.
CLS_ID = 0
PAD_ID = 1
EOS_ID = 2

# Segmentation (docs/segmentation.md#content-budget): content budget L = Lraw - 12 when M > 1, else Lraw - 2.
MULTI_SEGMENT_RESERVE = 12
SINGLE_SEGMENT_RESERVE = 2
# A trailing piece shorter than min(floor(0.3 * L), 50) tokens is dropped
# (docs/segmentation.md#short-tail-rule).
SHORT_TAIL_FRACTION = 0.3
SHORT_TAIL_CAP = 50

# Preprocessing (docs/data.md#preprocess-outputs).
DOC_FIELD_SEPARATOR = "</s>"
DEFAULT_MAX_DOC_CHARACTER = 10000
DEFAULT_MAX_SEQ_LENGTH = 2048
DEFAULT_MAX_QUERY_LENGTH = 64
# Written by SeDR_preprocess.py beside its outputs: the settings and the raw inputs they came from.
PREPROCESS_RECORD = "preprocess_args.json"
# Written by SeDR/train.py beside every checkpoint: the resolved flags and the facts the run read;
# the Retriever takes an index's segment shape from it.
TRAINING_ARGS = "training_args.json"

# Split name -> (queries file, qrels file) (docs/data.md#input-files).
SPLIT_FILES = {
    "train": ("msmarco-doctrain-queries.tsv", "msmarco-doctrain-qrels.tsv"),
    "dev": ("msmarco-docdev-queries.tsv", "msmarco-docdev-qrels.tsv"),
    "test": ("msmarco-test2019-queries.tsv", "2019qrels-docs.txt"),
    "2020test": ("msmarco-test2020-queries.tsv", "2020qrels-docs.txt"),
}
CORPUS_FILE = "msmarco-docs.tsv"

# Retrieval (docs/retrieval.md#maxp-aggregation): segment hits per query, documents kept for dev / TREC-DL.
SEGMENT_HITS = 1024
DEV_DOCS_KEPT = 101
TREC_DOCS_KEPT = 100
# Evaluated splits and the documents kept per query for each.
EVAL_DOCS_KEPT = {"dev": DEV_DOCS_KEPT, "test": TREC_DOCS_KEPT, "2020test": TREC_DOCS_KEPT}
MRR_CUTOFF = 100
# Exact search implementations (docs/search-backends.md#search).
SEARCH_BACKENDS = ("auto", "faiss", "torch")
# docs/scale.md#memory: rows per block of a search's scan over the vectors (a multiple of 2^16, the chunk of
# a 1,024-query batch, and of faiss's 1,024-row tiles), queries whose running top-k one pass holds.
SEARCH_BLOCK_ROWS = 1 << 18
SEARCH_QUERY_BLOCK = 1 << 16

# Hard negatives kept per training query (docs/retrieval.md#hard-negative-generation).
HARDNEG_LIST_LENGTH = 300

# Seconds a rank waits in a collective under torchrun before the job stops (--ddp_timeout): long
# enough for rank 0 to merge MS MARCO's encoded shards (about 23 GB) on a slow disk; torch's own
# default is 10 minutes (docs/distributed.md#ddp).
DEFAULT_DDP_TIMEOUT = 7200
