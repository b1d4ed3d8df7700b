"""Constants shared by the live tests."""
import os

DUMPS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "dumps")
CXL = os.path.join(DUMPS, "qemu-6.1", "lspci-xxxx_0000_0d_00.0.txt")
BDF = "0000:0d:00.0"
