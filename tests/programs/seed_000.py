import torch

a = torch.tensor(2., requires_grad=True)
b = torch.tensor(6., requires_grad=True)
P = 3*a**3 - b**2
print('P: {}'.format(P))
P.backward()
print('gradient w.r.t. a: {}'.format(a.grad))
print('gradient w.r.t. b: {}'.format(b.grad))
Q = -3*a**3 + b**2
print('Q: {}'.format(Q))
Q.backward()
print('gradient w.r.t. a: {}'.format(a.grad))
print('gradient w.r.t. b: {}'.format(b.grad))
# clear the gradients
if a.grad is not None:
    a.grad.zero_()

if b.grad is not None:
    b.grad.zero_()
# forward pass for P
P = 3*a**3 - b**2
print('P: {}'.format(P))

# backward pass for P
P.backward()
print('gradient w.r.t. a: {}'.format(a.grad))
print('gradient w.r.t. b: {}'.format(b.grad))
if a.grad is not None:
    a.grad.zero_()

if b.grad is not None:
    b.grad.zero_()
Q = -3*a**3 + b**2
print('Q: {}'.format(Q))
Q.backward()
print('gradient w.r.t. a: {}'.format(a.grad))
print('gradient w.r.t. b: {}'.format(b.grad))
