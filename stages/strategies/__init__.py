"""The strategy stage's parts, one module per concept: the regime detector, the strategies it allocates among
(momentum, mean reversion, Avellaneda-Stoikov market making, cross-venue arbitrage) and the allocator. Each is
pure numba over plain arrays; ``stages.strategy`` composes them into the stage's kernel."""
