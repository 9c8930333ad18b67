"""The memory transformation of InfiniteICL, stage by stage: chunking, prompts, elicitation,
selection, distillation, replay, consolidation and one transformation T_i."""
