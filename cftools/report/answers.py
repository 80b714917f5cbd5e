"""Answering in the gallery: review questions with their images, and the controls that
turn what a person sees into a corrections file (cftools(7), CORRECTIONS).

The site stays static: it opens from disk, with no server and nothing listening. The
answers live in the browser's local storage (under the features' id, so every page of
the gallery, and a rebuilt gallery of the same set, shares them) and "save corrections"
downloads them as one corrections.json, for cf-merge --corrections. What a person can do:

- on review.html (cf-eval review's questions): answer each question "same person" or
  "different" (again to change it);
- on a cluster card: mark a member "not this identity" (the x beside it; again to undo),
  merge the cluster with another ("merge", then "merge here" on the other card, on any
  page), name the cluster.

A member marked is recorded as different from the card's core (its three most central
members, the card's first), a merge as the two cores the same, a name as the core's
points named, a question's answer as its two points the same or different.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

ANSWERS_JS = "answers.js"
SHOWN_PER_SIDE = 6  # images of each side of a review question

CSS = """
#cf-bar{position:fixed;right:12px;bottom:12px;background:#263238;color:#eee;padding:6px 10px;
border-radius:6px;box-shadow:0 2px 6px #0005;z-index:10;font-size:13px}
#cf-bar button{margin-left:6px}
.cf-tools{margin:0 0 6px;display:flex;gap:6px;align-items:center;flex-wrap:wrap;font-size:12px}
.cf-tools .cf-named{font-weight:bold;color:#2e7d32}
.cf-x{align-self:flex-start;margin-left:-22px;width:20px;height:20px;padding:0;z-index:2;
border:1px solid #888;border-radius:10px;background:#fffc;font-size:12px;line-height:1;
cursor:pointer}.cf-x.on{background:#d32f2f;color:#fff;border-color:#d32f2f}
.m.cf-out{opacity:.35}.card.cf-pending{box-shadow:0 0 0 3px #1565c0}
.q{background:#fff;border-radius:6px;margin:0 0 14px;padding:8px 10px;box-shadow:0 1px 2px #0002}
.q .sides{display:flex;gap:24px;flex-wrap:wrap}.q .side{flex:1;min-width:200px}
.q .side h3{font-size:13px;margin:2px 0;color:#555}
.q button.on{background:#1565c0;color:#fff}
"""

JS = r"""(function(){
var KEY='cftools-answers:'+CF.features_id,PEND='cftools-merge:'+CF.features_id;
function load(){try{return JSON.parse(localStorage.getItem(KEY)||'[]');}catch(e){return [];}}
function store(list){localStorage.setItem(KEY,JSON.stringify(list));paint();}
function put(a){var l=load().filter(function(x){return x.key!==a.key;});
a.time=new Date().toISOString();l.push(a);store(l);}
function drop(k){store(load().filter(function(x){return x.key!==k;}));}
function has(k){return load().some(function(x){return x.key===k;});}
function ints(s){return s.split(',').filter(String).map(Number);}
function doc(){return {cftools_kind:'corrections',cftools_format:1,features_id:CF.features_id,
n_points:CF.n_points,made_by:'cf-eval gallery',clusters_id:CF.clusters_id,
answers:load().map(function(a){var o={};for(var k in a)if(k!=='key')o[k]=a[k];return o;})};}
function save(){var b=new Blob([JSON.stringify(doc(),null,1)],{type:'application/json'});
var a=document.createElement('a');a.href=URL.createObjectURL(b);a.download='corrections.json';
document.body.appendChild(a);a.click();setTimeout(function(){document.body.removeChild(a);},0);
document.documentElement.setAttribute('data-saved',load().length);}
function el(tag,attrs,text){var e=document.createElement(tag);for(var k in attrs)e.setAttribute(k,attrs[k]);
if(text!==undefined)e.textContent=text;return e;}
function bar(){var b=el('div',{id:'cf-bar'});b.appendChild(el('span',{id:'cf-count'}));
var s=el('button',{id:'cf-save'},'save corrections');s.onclick=save;b.appendChild(s);
var c=el('button',{id:'cf-clear'},'clear');
c.onclick=function(){if(window.confirm('Forget every answer?'))store([]);};
b.appendChild(c);document.body.appendChild(b);}
function cards(){var cs=document.querySelectorAll('section.card[data-core]');
for(var i=0;i<cs.length;i++)card(cs[i]);}
function card(c){var lab=c.getAttribute('data-label'),core=ints(c.getAttribute('data-core'));
var t=el('div',{'class':'cf-tools'}),m=el('button',{'class':'cf-merge'},'merge');
m.onclick=function(){var p=localStorage.getItem(PEND);
if(p){p=JSON.parse(p);localStorage.removeItem(PEND);if(p.label!==lab)
put({key:'m'+p.label+':'+lab,kind:'same',a:[p.core[0]],b:[core[0]],action:'merge',
clusters:[+p.label,+lab]});else paint();}
else{localStorage.setItem(PEND,JSON.stringify({label:lab,core:core}));paint();}};
var n=el('input',{'class':'cf-name',placeholder:'name this cluster',size:16}),
s=el('button',{'class':'cf-name-set'},'name');
s.onclick=function(){var v=n.value.trim();if(v)put({key:'n'+lab,kind:'name',points:core,name:v,
action:'name',cluster:+lab});else drop('n'+lab);};
t.appendChild(m);t.appendChild(n);t.appendChild(s);t.appendChild(el('span',{'class':'cf-named'}));
var h=c.querySelector('h2');h.parentNode.insertBefore(t,h.nextSibling);
var ms=c.querySelectorAll('.m');for(var j=0;j<ms.length;j++)member(ms[j],lab,core);}
function member(m,lab,core){var row=+m.id.slice(1),x=el('button',{'class':'cf-x',
title:'not this identity','data-row':row},'\u00d7');
x.onclick=function(){var k='x'+row+':'+lab;if(has(k)){drop(k);return;}
var ref=core.filter(function(r){return r!==row;}).slice(0,3);if(!ref.length)return;
put({key:k,kind:'different',a:[row],b:ref,action:'not-this-identity',cluster:+lab});};
m.parentNode.insertBefore(x,m.nextSibling);}
function questions(){var qs=document.querySelectorAll('.q[data-q]');
for(var i=0;i<qs.length;i++)(function(q){var id=+q.getAttribute('data-q'),
a=+q.getAttribute('data-a'),b=+q.getAttribute('data-b'),bs=q.querySelectorAll('button[data-answer]');
for(var j=0;j<bs.length;j++)(function(btn){btn.onclick=function(){var v=btn.getAttribute('data-answer');
if(v==='skip'){drop('q'+id);return;}
put({key:'q'+id,kind:v,a:[a],b:[b],question:id,action:'answer'});};})(bs[j]);})(qs[i]);}
function paint(){var l=load(),by={};l.forEach(function(a){by[a.key]=a;});
var c=document.getElementById('cf-count');if(c)c.textContent=l.length+' answers';
document.documentElement.setAttribute('data-answers',l.length);
var xs=document.querySelectorAll('.cf-x');for(var i=0;i<xs.length;i++){var x=xs[i],
on=l.some(function(a){return a.action==='not-this-identity'&&a.a[0]===+x.getAttribute('data-row');});
x.className='cf-x'+(on?' on':'');var m=x.previousSibling;if(m&&m.classList)m.classList.toggle('cf-out',on);}
var p=localStorage.getItem(PEND);p=p?JSON.parse(p).label:null;
var cs=document.querySelectorAll('section.card[data-core]');for(var j=0;j<cs.length;j++){
var lab=cs[j].getAttribute('data-label'),mb=cs[j].querySelector('.cf-merge');
cs[j].classList.toggle('cf-pending',p===lab);
if(mb)mb.textContent=p===null?'merge':(p===lab?'cancel merge':'merge here');
var nm=by['n'+lab],sp=cs[j].querySelector('.cf-named');if(sp)sp.textContent=nm?'named: '+nm.name:'';}
var qs=document.querySelectorAll('.q[data-q]');for(var k=0;k<qs.length;k++){
var ans=by['q'+qs[k].getAttribute('data-q')],bs=qs[k].querySelectorAll('button[data-answer]');
for(var n=0;n<bs.length;n++)bs[n].className=ans&&ans.kind===bs[n].getAttribute('data-answer')?'on':'';}}
window.addEventListener('load',function(){bar();cards();questions();paint();
document.documentElement.setAttribute('data-answering','1');});
window.addEventListener('storage',paint);
})();
"""


def write_script(out_dir: Path, features_id: str, n_points: int, clusters_id: str) -> None:
    """DIR/answers.js: the set's identity, then the answering code."""
    cfg = {"features_id": features_id, "n_points": int(n_points), "clusters_id": clusters_id}
    (Path(out_dir) / ANSWERS_JS).write_text(f"var CF={json.dumps(cfg)};\n{JS}", encoding="utf-8")


def script_tag(up: str) -> str:
    return f"<script src=\"{up}{ANSWERS_JS}\"></script>"


def card_attrs(label: int, core) -> str:
    """The attributes of a cluster card that its controls read."""
    return f" data-label={int(label)} data-core=\"{','.join(str(int(r)) for r in core)}\""


def review_page(questions: dict, render, members_of, head: str, tail: str) -> str:
    """review.html: every question of cf-eval review, its two sides as images (``render``:
    point -> HTML; ``members_of``: cluster label -> its most central members)."""
    parts = [head, "<h1>review</h1><p>The decisions of this clustering most likely wrong, "
             "best first (cf-eval review). Answer what you can tell at a glance; the answers "
             "are kept in this browser until you <b>save corrections</b> (bottom right), "
             "then: <code>cf-merge LINKS -o CLUSTERS --corrections corrections.json</code>."
             "</p>"]
    for q in questions.get("questions", []):
        a, b = [int(r) for r in q["a"]], [int(r) for r in q["b"]]
        side_a, side_b = list(a), list(b)
        if q.get("rule") == "join":
            side_a += [r for r in members_of(q.get("cluster_a")) if r not in side_a]
            side_b += [r for r in members_of(q.get("cluster_b")) if r not in side_b]
        elif q.get("rule") == "member":
            side_b += [r for r in members_of(q.get("cluster_b")) if r not in side_b + a]
        side_a, side_b = side_a[:SHOWN_PER_SIDE], side_b[:SHOWN_PER_SIDE]
        ask = ("Are these two clusters one person?" if q.get("rule") == "join" else
               "Is this one the person of the cluster?" if q.get("rule") == "member" else
               "Are these two parts of the cluster one person?")
        parts.append(
            f"<section class=q data-q={int(q['id'])} data-a={a[0]} data-b={b[0]}>"
            f"<h2>{int(q['id'])}. {html.escape(ask)} <small>{html.escape(str(q.get('why', '')))}"
            f" · p(same) {float(q.get('p_same', 0)):.2f}</small></h2><div class=sides>"
            f"<div class=side><h3>A ({int(q.get('size_a', len(a)))} points)</h3><div class=ms>"
            + "".join(render(r) for r in side_a)
            + f"</div></div><div class=side><h3>B ({int(q.get('size_b', len(b)))} points)</h3>"
            "<div class=ms>" + "".join(render(r) for r in side_b) + "</div></div></div>"
            "<p><button data-answer=same>same person</button> "
            "<button data-answer=different>different</button> "
            "<button data-answer=skip>skip</button></p></section>")
    parts.append(tail)
    return "".join(parts)
