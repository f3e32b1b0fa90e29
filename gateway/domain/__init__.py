"""Pure rules of camgate: no I/O, no clock reads, no framework imports."""
