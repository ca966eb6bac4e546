"""The human in the loop: active learning's scores and selection (`active`), review
mode's order (`review`) and a simulated labeler for benchmarks and tests (`simulated`)."""
