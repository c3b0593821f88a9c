"""The lab's virtual machines: image, accelerator, QEMU driver, console, agent, config drive."""
