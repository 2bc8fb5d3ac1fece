"""The cloud's state store: live inventory, nodes, stream positions, dead letters, commands."""
