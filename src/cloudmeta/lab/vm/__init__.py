"""Virtual machine instances of the lab (QEMU guests) and what they boot with."""
