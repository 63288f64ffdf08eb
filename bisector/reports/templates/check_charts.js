/* Only checks that every chart decoded: a broken image is a console error a test (and a person) can see. */
window.addEventListener('load',function(){var imgs=document.querySelectorAll('img.chart'),bad=0;
for(var i=0;i<imgs.length;i++){if(!imgs[i].complete||imgs[i].naturalWidth===0){bad++;}}
document.body.setAttribute('data-charts',String(imgs.length));document.body.setAttribute('data-broken',String(bad));
if(bad){console.error('bisector report: '+bad+' chart(s) failed to render');}});
