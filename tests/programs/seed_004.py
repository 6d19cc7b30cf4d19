import torch
import numpy as np
from torch.autograd import Variable
x = torch.ones(3,3) * 0.5
print(x)
v = Variable(x,requires_grad=True)
print(v)
print(v.data)
y = v**2
print(y)
print(type(y.grad_fn).__name__ if False else y.grad_fn.name())
z = y + 3
print(z.grad_fn.next_functions[0][0].name())
print(z)
f = z.mean()
print(f)
f.backward()
print(v.grad)
x = Variable(torch.ones(2,2),requires_grad=True)
print(x)
y = x**2
print(y)
y.backward(torch.ones(2,2))
print(x.grad)
x = torch.ones(3)
x = Variable(x, requires_grad=True)
y = x * 2
y.backward(torch.Tensor([1,0.1,0.01]))
print(x.grad)
