"""Python's side of torch_convert_python_test.cpp (Debian's /usr/bin/python3,
PyTorch 1.13): continues a LibTorch run from what `ckpt convert --to torch
--optimizer-layout pytorch` made of its dcp++ checkpoint.

    py_convert_continue.py FILE IN_DIR OUT_DIR

FILE: the torch file, {"model": module state dict, "optim": Adam's
state_dict() in Python's layout}. IN_DIR: manifest.txt with x.0 and y.0,
the batch of the next step (py_optim_state.py's format). The net of
py_optim_state.py loads "model"; torch.optim.Adam over its two groups (fc1;
the rest) loads "optim"; one step with aux (it has no state yet). OUT_DIR/
manifest.txt: "tensor param/<name> ..." after the step.
"""
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from py_optim_state import Net, Writer, read_manifest  # noqa: E402


def main():
    path, in_dir, out_dir = sys.argv[1:4]
    # The optimizer's options are floats: 1.13's weights_only unpickler has
    # no BINFLOAT (ckpt_convert_test.sh checks the opcodes against 2.x's).
    obj = torch.load(path, weights_only=False)
    net = Net()
    net.load_state_dict(obj["model"])
    named = list(net.named_parameters())
    first = [p for n, p in named if n.startswith("fc1.")]
    rest = [p for n, p in named if not n.startswith("fc1.")]
    opt = torch.optim.Adam([{"params": first}, {"params": rest}], lr=0.5)
    opt.load_state_dict(obj["optim"])
    inputs = read_manifest(in_dir)
    opt.zero_grad()
    F.mse_loss(net(inputs["x.0"], True), inputs["y.0"]).backward()
    opt.step()
    w = Writer(out_dir)
    for name, p in net.named_parameters():
        w.tensor("param/" + name, p)
    w.close()


if __name__ == "__main__":
    main()
