"""The lab's virtual machines: image, accelerator, QEMU driver, console and guest agent."""
