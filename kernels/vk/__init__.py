"""The "commands" runtime: Taichi's compiled tasks run from Vulkan command buffers of our own (spec/kernels.md §8).

context.py makes the device (with the features Taichi's own runtime would enable), code.py has Taichi compile a
kernel to its SPIR-V tasks and argument layout, arrays.py holds arrays on the device, and replay.py records a pass
once and submits it per run.
"""
