"""Python's side of torch_optimizer_python_test.cpp (run with Debian's
/usr/bin/python3, PyTorch 1.13).

    py_optim_state.py IN_DIR OUT_DIR

IN_DIR (written by the C++ test):
  manifest.txt  one tensor a line: "<name> <dtype> <shape> <file>", shape
                "d0,d1,..." ("-" for 0-d), raw little-endian data in <file>:
                "param.<name>" the initial parameters of the test net,
                "x.<i>" and "y.<i>" the data of step i
  cases.json    [{"name", "kind" (a torch.optim class), "options" (its
                keyword arguments), "steps"}]

For each case the equivalent of the C++ net (tests/integrations/
torch_test_net.h: fc1, bn, drop, fc2, aux, in that order) starts from the
given parameters, and the optimizer over two groups (fc1's parameters at
options' lr; the rest at half of it) takes `steps` steps without `aux`
(which so gets no gradient and no state), then one more with it. OUT_DIR/
<name>/ receives:
  manifest.txt  one value a line: "tensor <key> <dtype> <shape> <file>",
                "int <key> <value>" or "none <key>", where <key> is
                "state/<index>/<field>" (optimizer.state_dict()["state"]
                after `steps` steps), "param3/<name>" (the parameters then)
                or "param4/<name>" (after the extra step)
  param_groups.json  optimizer.state_dict()["param_groups"] after `steps`
  state.pt      torch.save(optimizer.state_dict()) after `steps`
"""
import json
import os
import sys

import torch
import torch.nn.functional as F


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(8, 16)
        self.bn = torch.nn.BatchNorm1d(16)
        self.drop = torch.nn.Dropout(0.0)
        self.fc2 = torch.nn.Linear(16, 4)
        self.aux = torch.nn.Linear(8, 4)

    def forward(self, x, use_aux):
        y = self.fc2(self.drop(torch.relu(self.bn(self.fc1(x)))))
        return y + self.aux(x) if use_aux else y


DTYPES = {"float32": torch.float32, "float64": torch.float64, "int64": torch.int64}


def read_manifest(directory):
    tensors = {}
    with open(os.path.join(directory, "manifest.txt")) as f:
        for line in f:
            name, dtype, shape, file = line.split()
            dims = [] if shape == "-" else [int(d) for d in shape.split(",")]
            with open(os.path.join(directory, file), "rb") as data:
                buf = bytearray(data.read())
            t = torch.frombuffer(buf, dtype=DTYPES[dtype]) if buf else torch.empty(0, dtype=DTYPES[dtype])
            tensors[name] = t.reshape(dims).clone()
    return tensors


class Writer:
    def __init__(self, directory):
        self.directory = directory
        self.lines = []
        os.makedirs(directory, exist_ok=True)

    def tensor(self, key, t):
        t = t.detach().contiguous().cpu()
        file = "t%d.bin" % len(self.lines)
        with open(os.path.join(self.directory, file), "wb") as f:
            f.write(t.numpy().astype(t.numpy().dtype.newbyteorder("<")).tobytes())
        shape = ",".join(str(d) for d in t.shape) or "-"
        self.lines.append("tensor %s %s %s %s" % (key, str(t.dtype).replace("torch.", ""), shape, file))

    def value(self, key, v):
        if v is None:
            self.lines.append("none %s" % key)
        elif isinstance(v, torch.Tensor):
            self.tensor(key, v)
        elif isinstance(v, int) and not isinstance(v, bool):
            self.lines.append("int %s %d" % (key, v))
        else:
            raise TypeError("%s: %r" % (key, v))

    def close(self):
        with open(os.path.join(self.directory, "manifest.txt"), "w") as f:
            f.write("\n".join(self.lines) + "\n")


def run_case(case, inputs, out_dir):
    torch.manual_seed(0)
    net = Net()
    with torch.no_grad():
        for name, p in net.named_parameters():
            p.copy_(inputs["param." + name])
    named = list(net.named_parameters())
    first = [p for n, p in named if n.startswith("fc1.")]
    rest = [p for n, p in named if not n.startswith("fc1.")]
    options = dict(case["options"])
    lr = options["lr"]
    opt = getattr(torch.optim, case["kind"])(
        [{"params": first, "lr": lr}, {"params": rest, "lr": lr / 2}], **options)

    def step(i, use_aux):
        opt.zero_grad()
        F.mse_loss(net(inputs["x.%d" % i], use_aux), inputs["y.%d" % i]).backward()
        opt.step()

    steps = case["steps"]
    for i in range(steps):
        step(i, False)
    w = Writer(os.path.join(out_dir, case["name"]))
    sd = opt.state_dict()
    for index, entry in sd["state"].items():
        for field, v in entry.items():
            w.value("state/%d/%s" % (index, field), v)
    for name, p in net.named_parameters():
        w.tensor("param3/" + name, p)
    with open(os.path.join(w.directory, "param_groups.json"), "w") as f:
        json.dump(sd["param_groups"], f)
    torch.save(sd, os.path.join(w.directory, "state.pt"))
    step(steps, True)
    for name, p in net.named_parameters():
        w.tensor("param4/" + name, p)
    w.close()


def main():
    in_dir, out_dir = sys.argv[1], sys.argv[2]
    inputs = read_manifest(in_dir)
    with open(os.path.join(in_dir, "cases.json")) as f:
        cases = json.load(f)
    for case in cases:
        run_case(case, inputs, out_dir)


if __name__ == "__main__":
    main()
