import torch
x=torch.tensor(5, requires_grad=True, dtype=torch.float32) # creates a tensor (think as multi-dimensional array)
print(x)
print(x.grad)  # x.grad=None initally
y=x*x
print(y)
print(y.grad)
y.backward() # computes partial derivatives ∂y/∂x and stores it in x.grad
print(x.grad) # ∂y/∂x = 2 * x = 2 * 5 = 10
x=torch.tensor(5, requires_grad=True, dtype=torch.float32)
z=torch.tensor(3, requires_grad=True, dtype=torch.float32)
y=x*x + z + torch.log(z)
y.backward()
print((x.grad, z.grad))
x=torch.tensor(5, requires_grad=True, dtype=torch.float32)
z=torch.tensor(3, requires_grad=True, dtype=torch.float32)
r1=x*x + z + torch.log(z) # r1=f(x,z), where f=x*x + z + log(z)
r2=r1+torch.sqrt(x)  # r2=g(r1,x), where g=r1 + √x
r3=100*r1+torch.log(r2) # r3=h(r1,r2), where h=100 * r1 + log(r2)
y=r1+r2+r3 # y=u(r1,r2,r3), where u=r1 + r2 +r3
y.backward() # voila!
print(f"∂y/∂x={x.grad}, ∂y/∂z={z.grad}")
print(x.grad, z.grad, r1.grad, r2.grad, r3.grad)
