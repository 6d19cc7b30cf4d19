import torch

a = torch.tensor([2.0, 3.0], requires_grad=True)
print(a)
b = torch.tensor([6.0, 4.0], requires_grad=True)
print(b)
Q = 3*a**3 - b**2
print(Q)
external_grad = torch.tensor([1., 1.])
Q.backward(gradient=external_grad)
#Gradients are now deposited in a.grad and b.grad
print(a.grad)
print(b.grad)

print(9*a**2 == a.grad)
print(-2*b == b.grad)
shape = (3,1)
x = torch.ones(shape, requires_grad=True)
y = x+1
print(y)
print(y.requires_grad)
z = y**2 + 3
print(z)
print(z.requires_grad)
x = torch.ones(5, 5)
y = torch.ones(5, 5)
z = torch.ones((5, 5), requires_grad=True)
a = x + y
print(f"Does `a` require gradients?: {a.requires_grad}")
b = x + z
print(f"Does `b` require gradients?: {b.requires_grad}")
with torch.no_grad():
    c = x + z
print(c.requires_grad)
d = x + z
d_detached = d.detach()
print(d_detached.requires_grad)
sample_size = 2
number_features = 3
x = torch.arange(sample_size*number_features).reshape(sample_size, number_features) * 1.0
print(x)
target = torch.arange(2, sample_size+2).reshape(sample_size, 1) * 1.0
print(target)
w = torch.ones((3,1), requires_grad=True)
print(w)
print(w.grad)
output = x.matmul(w)
print(output)
loss = ((output - target)**2).mean()
print(loss)
loss.backward()
print(w.grad)
def update_parameter(w, learning_rate=0.1):
    with torch.no_grad():
        w.add_(w.grad, alpha=-1*learning_rate)
update_parameter(w, 0.01)
print(w)
a = torch.tensor([2.0, 3.0], requires_grad=True)
b = torch.tensor([6.0, 4.0], requires_grad=True)
Q = 3*a**3 - b**2
print(Q)
external_grad = torch.tensor([1., 1.])
Q.backward(gradient=external_grad)
print(a.grad)
print(a.grad.zero_())
